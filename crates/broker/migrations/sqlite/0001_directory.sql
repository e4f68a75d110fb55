-- Accounts (users) and instances share one table: both are principals that log in.
-- Nothing here opens anything: wrapped_key is sealed by a key only the client derives,
-- verifier is SHA-256 of a client-derived login secret, public_key is public.
CREATE TABLE principals (
    id          BLOB PRIMARY KEY CHECK (length(id) = 16),
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'instance')),
    login       TEXT NOT NULL UNIQUE,
    public_key  BLOB NOT NULL CHECK (length(public_key) = 32),
    wrapped_key BLOB NOT NULL,
    verifier    BLOB NOT NULL CHECK (length(verifier) = 32),
    kdf_salt    BLOB,
    kdf_memory_kib  INTEGER,
    kdf_iterations  INTEGER,
    kdf_parallelism INTEGER,
    created_at  INTEGER NOT NULL
);

-- Who may address whom: a user and each instance it added.
CREATE TABLE pairings (
    user_id     BLOB NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
    instance_id BLOB NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, instance_id)
);
CREATE INDEX pairings_by_instance ON pairings(instance_id);

-- Metadata of closed MQTT sessions: who, from where, when, how much. Never content.
CREATE TABLE session_log (
    principal_id    BLOB NOT NULL,
    ip              TEXT NOT NULL,
    connected_at    INTEGER NOT NULL,
    disconnected_at INTEGER NOT NULL,
    bytes_in        INTEGER NOT NULL,
    bytes_out       INTEGER NOT NULL,
    messages_in     INTEGER NOT NULL,
    messages_out    INTEGER NOT NULL,
    close_reason    TEXT NOT NULL
);
CREATE INDEX session_log_by_time ON session_log(disconnected_at);
