-- Sessions shorter than `accounting.aggregate_below_secs` are summed into one row per
-- (principal, address, close reason, hour) instead of a row each, so a client reconnecting
-- in a loop adds rows per hour, not per connection. `sessions` counts the sessions a row
-- stands for (1 for an ordinary row); `hour` (unix seconds / 3600) is set on summed rows only.
ALTER TABLE session_log ADD COLUMN sessions INTEGER NOT NULL DEFAULT 1;
ALTER TABLE session_log ADD COLUMN hour INTEGER;
CREATE UNIQUE INDEX session_log_short ON session_log(principal_id, ip, close_reason, hour)
    WHERE hour IS NOT NULL;
