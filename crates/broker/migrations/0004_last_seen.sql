-- When the principal's last MQTT session ended (unix seconds; NULL: never connected), so a
-- console can show "last seen" after session_log rows have aged out. Metadata only.
ALTER TABLE principals ADD COLUMN last_seen INTEGER;
