-- The key proof's verifier (protocol §2.4): SHA-256 of a secret only the holder of the
-- private key can derive. Set at registration or reset (or once, by a client, for accounts
-- made before it existed) and unchanged by a change of password, so a login secret alone
-- can no longer replace the wrap of a key it cannot open. NULL: not recorded yet.
ALTER TABLE principals ADD COLUMN key_verifier BLOB CHECK (key_verifier IS NULL OR length(key_verifier) = 32);

-- The password material a change of password replaced, kept `auth.previous_key_days` so
-- the holder of the previous password can undo the change (protocol §7.8). One row per
-- user: the state before the first change of the grace period, so a second change cannot
-- push the real owner's wrap out. Opaque blobs and verifiers only, as in principals.
CREATE TABLE previous_passwords (
    user_id         BLOB PRIMARY KEY REFERENCES principals(id) ON DELETE CASCADE,
    wrapped_key     BLOB NOT NULL,
    verifier        BLOB NOT NULL CHECK (length(verifier) = 32),
    kdf_salt        BLOB NOT NULL,
    kdf_memory_kib  INTEGER NOT NULL,
    kdf_iterations  INTEGER NOT NULL,
    kdf_parallelism INTEGER NOT NULL,
    changed_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX previous_passwords_by_expiry ON previous_passwords(expires_at);
