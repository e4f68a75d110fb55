-- The directory on PostgreSQL: the schema the SQLite migrations 0001 to 0007 build, in one
-- step (a PostgreSQL directory starts at this version). Integers are BIGINT, blobs BYTEA;
-- the comments on each column are in migrations/sqlite. Nothing here opens anything:
-- wrapped keys are sealed by keys only clients derive, verifiers are hashes of
-- client-derived secrets, public keys are public, session_log is metadata only.
CREATE TABLE principals (
    id              BYTEA PRIMARY KEY CHECK (length(id) = 16),
    kind            TEXT NOT NULL CHECK (kind IN ('user', 'instance')),
    login           TEXT NOT NULL UNIQUE,
    public_key      BYTEA NOT NULL CHECK (length(public_key) = 32),
    wrapped_key     BYTEA NOT NULL,
    verifier        BYTEA NOT NULL CHECK (length(verifier) = 32),
    kdf_salt        BYTEA,
    kdf_memory_kib  BIGINT,
    kdf_iterations  BIGINT,
    kdf_parallelism BIGINT,
    created_at      BIGINT NOT NULL,
    keyring         BYTEA,
    keyring_version BIGINT NOT NULL DEFAULT 0,
    last_seen       BIGINT,
    key_verifier    BYTEA CHECK (key_verifier IS NULL OR length(key_verifier) = 32)
);

CREATE TABLE pairings (
    user_id         BYTEA NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
    instance_id     BYTEA NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    owner_copy      BYTEA,
    stale_owner_key BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, instance_id)
);
CREATE INDEX pairings_by_instance ON pairings(instance_id);

CREATE TABLE session_log (
    principal_id    BYTEA NOT NULL,
    ip              TEXT NOT NULL,
    connected_at    BIGINT NOT NULL,
    disconnected_at BIGINT NOT NULL,
    bytes_in        BIGINT NOT NULL,
    bytes_out       BIGINT NOT NULL,
    messages_in     BIGINT NOT NULL,
    messages_out    BIGINT NOT NULL,
    close_reason    TEXT NOT NULL,
    sessions        BIGINT NOT NULL DEFAULT 1,
    hour            BIGINT
);
CREATE INDEX session_log_by_time ON session_log(disconnected_at);
CREATE INDEX session_log_by_principal ON session_log(principal_id, disconnected_at);
CREATE UNIQUE INDEX session_log_short ON session_log(principal_id, ip, close_reason, hour)
    WHERE hour IS NOT NULL;

CREATE TABLE resets (
    user_id    BYTEA PRIMARY KEY REFERENCES principals(id) ON DELETE CASCADE,
    verifier   BYTEA NOT NULL CHECK (length(verifier) = 32),
    expires_at BIGINT NOT NULL
);

CREATE TABLE previous_passwords (
    user_id         BYTEA PRIMARY KEY REFERENCES principals(id) ON DELETE CASCADE,
    wrapped_key     BYTEA NOT NULL,
    verifier        BYTEA NOT NULL CHECK (length(verifier) = 32),
    kdf_salt        BYTEA NOT NULL,
    kdf_memory_kib  BIGINT NOT NULL,
    kdf_iterations  BIGINT NOT NULL,
    kdf_parallelism BIGINT NOT NULL,
    changed_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX previous_passwords_by_expiry ON previous_passwords(expires_at);

CREATE TABLE invites (
    verifier   BYTEA PRIMARY KEY CHECK (length(verifier) = 32),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
