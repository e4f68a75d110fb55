-- One-time invite codes for `auth.registration = "invite"`, issued by the operator
-- (`sealrelay admin invite`). Only a verifier of each code is kept; a registration consumes
-- its code in the transaction that creates the account.
CREATE TABLE invites (
    verifier   BLOB PRIMARY KEY CHECK (length(verifier) = 32),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
