-- When the principal's last MQTT session ended (unix seconds; NULL: never connected), so a
-- console can show "last seen" after session_log rows have aged out. Metadata only.
ALTER TABLE principals ADD COLUMN last_seen INTEGER;

-- The operator reads one principal's sessions, newest first (`sealrelay admin session-log`).
CREATE INDEX session_log_by_principal ON session_log(principal_id, disconnected_at);
