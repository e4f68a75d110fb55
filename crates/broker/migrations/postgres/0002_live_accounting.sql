-- Live accounting: the SQLite migration 0008, whose comments say what each column holds.
ALTER TABLE session_log ADD COLUMN id BIGINT;
CREATE UNIQUE INDEX session_log_id ON session_log(id);
ALTER TABLE session_log ADD COLUMN node BIGINT;
ALTER TABLE session_log ADD COLUMN transport TEXT;
ALTER TABLE session_log ADD COLUMN protocol_version TEXT;
ALTER TABLE session_log ADD COLUMN client_id TEXT;
ALTER TABLE session_log ADD COLUMN wire_bytes_in BIGINT NOT NULL DEFAULT 0;
ALTER TABLE session_log ADD COLUMN wire_bytes_out BIGINT NOT NULL DEFAULT 0;
CREATE INDEX session_log_live ON session_log(close_reason, disconnected_at);

CREATE TABLE usage_hours (
    principal_id   BYTEA NOT NULL,
    hour           BIGINT NOT NULL,
    sessions       BIGINT NOT NULL DEFAULT 0,
    bytes_in       BIGINT NOT NULL DEFAULT 0,
    bytes_out      BIGINT NOT NULL DEFAULT 0,
    messages_in    BIGINT NOT NULL DEFAULT 0,
    messages_out   BIGINT NOT NULL DEFAULT 0,
    wire_bytes_in  BIGINT NOT NULL DEFAULT 0,
    wire_bytes_out BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (principal_id, hour)
);

CREATE TABLE login_failures (
    principal_id BYTEA NOT NULL,
    hour         BIGINT NOT NULL,
    ip           TEXT NOT NULL,
    reason       TEXT NOT NULL,
    failures     BIGINT NOT NULL,
    last_at      BIGINT NOT NULL,
    PRIMARY KEY (principal_id, hour, ip, reason)
);

ALTER TABLE principals ADD COLUMN changed_at BIGINT;
