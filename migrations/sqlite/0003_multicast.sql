-- Multicast (group) sends: the ciphertext is stored once in message_bodies and each
-- destination mailbox gets a small envelope row that refers to it (with an empty
-- ciphertext of its own). Bodies no envelope refers to are deleted by the periodic purge.
CREATE TABLE message_bodies (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    expires_at  INTEGER NOT NULL,
    ciphertext  BLOB NOT NULL
);
ALTER TABLE envelopes ADD COLUMN body_id INTEGER;
CREATE INDEX envelopes_body ON envelopes (body_id) WHERE body_id IS NOT NULL;
