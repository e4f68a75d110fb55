-- A principal's keyring: the peer public keys it pinned, sealed under a key only it can
-- derive (from its own private key). Opaque here; keyring_version counts its writes so
-- that two consoles of one user cannot silently overwrite each other (compare-and-swap).
ALTER TABLE principals ADD COLUMN keyring BLOB;
ALTER TABLE principals ADD COLUMN keyring_version INTEGER NOT NULL DEFAULT 0;

-- Set when the user's key pair was replaced by a password reset: the instance's bundle
-- still pins the old owner key, so the user must re-enrol it.
ALTER TABLE pairings ADD COLUMN stale_owner_key INTEGER NOT NULL DEFAULT 0;

-- Operator-issued reset codes, one pending per user: only a verifier of the code is kept.
CREATE TABLE resets (
    user_id    BLOB PRIMARY KEY REFERENCES principals(id) ON DELETE CASCADE,
    verifier   BLOB NOT NULL CHECK (length(verifier) = 32),
    expires_at INTEGER NOT NULL
);
