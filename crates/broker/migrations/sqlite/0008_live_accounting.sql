-- Live accounting (docs/accounting.md). A session's row is written at CONNACK and
-- checkpointed while it lives: `id` names it (random, drawn by the node that holds it; NULL
-- for rows older than this migration and for summed short sessions), `close_reason` is
-- 'live' until it closes, and `disconnected_at` is then the last checkpoint. A row still
-- 'live' when its node is gone is closed as 'unclean_shutdown' with the counts of its last
-- checkpoint. `ip` is written per accounting.ip_mode from here on.
ALTER TABLE session_log ADD COLUMN id INTEGER;
CREATE UNIQUE INDEX session_log_id ON session_log(id);
-- The broker process that wrote a live row (a random number drawn at each start): each
-- checkpoint marks all of its own unchanged live rows alive in one statement.
ALTER TABLE session_log ADD COLUMN node INTEGER;
-- 'tcp', 'tls', 'ws' or 'wss'; '3.1.1' or '5.0'; the MQTT client id (the assigned one when
-- the client sent none). NULL on rows older than this migration.
ALTER TABLE session_log ADD COLUMN transport TEXT;
ALTER TABLE session_log ADD COLUMN protocol_version TEXT;
ALTER TABLE session_log ADD COLUMN client_id TEXT;
-- The MQTT byte stream as it crossed the connection (after TLS, inside WebSocket frames),
-- each way: what the client's MQTT library wrote and read. bytes_in / bytes_out stay the
-- envelope bytes.
ALTER TABLE session_log ADD COLUMN wire_bytes_in INTEGER NOT NULL DEFAULT 0;
ALTER TABLE session_log ADD COLUMN wire_bytes_out INTEGER NOT NULL DEFAULT 0;
CREATE INDEX session_log_live ON session_log(close_reason, disconnected_at);

-- Per principal and hour (unix seconds / 3600): sessions opened, envelopes and bytes each
-- way, what a bill or a quota reads. Added to at each checkpoint and close.
CREATE TABLE usage_hours (
    principal_id   BLOB NOT NULL,
    hour           INTEGER NOT NULL,
    sessions       INTEGER NOT NULL DEFAULT 0,
    bytes_in       INTEGER NOT NULL DEFAULT 0,
    bytes_out      INTEGER NOT NULL DEFAULT 0,
    messages_in    INTEGER NOT NULL DEFAULT 0,
    messages_out   INTEGER NOT NULL DEFAULT 0,
    wire_bytes_in  INTEGER NOT NULL DEFAULT 0,
    wire_bytes_out INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (principal_id, hour)
);

-- Failed logins against an existing principal, per hour, address (accounting.ip_mode) and
-- reason ('denied': wrong secret; 'rate_limited': refused before checking). A name that
-- exists nowhere is not written: it may be a password typed into the wrong field.
CREATE TABLE login_failures (
    principal_id BLOB NOT NULL,
    hour         INTEGER NOT NULL,
    ip           TEXT NOT NULL,
    reason       TEXT NOT NULL,
    failures     INTEGER NOT NULL,
    last_at      INTEGER NOT NULL,
    PRIMARY KEY (principal_id, hour, ip, reason)
);

-- When the principal's wrapped key and verifier were last replaced (password change,
-- rollback, reset, token rotation); NULL: never since it was made.
ALTER TABLE principals ADD COLUMN changed_at INTEGER;
