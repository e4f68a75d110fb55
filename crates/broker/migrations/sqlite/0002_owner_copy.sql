-- The owner's escrow copy of an instance's bundle, wrapped under a key only the owner can
-- derive (from its own private key). It lets the owner rotate the instance's token; the
-- server cannot open it. NULL for pairings made before this column existed.
ALTER TABLE pairings ADD COLUMN owner_copy BLOB;
