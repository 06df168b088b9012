-- Multicast (group) sends: the ciphertext is stored once in message_bodies and each
-- destination mailbox gets a small envelope row that refers to it (with an empty
-- ciphertext of its own). Bodies no envelope refers to are deleted by the periodic purge.
CREATE TABLE message_bodies (
    id          BIGSERIAL PRIMARY KEY,
    expires_at  BIGINT NOT NULL,
    ciphertext  BYTEA NOT NULL
);
ALTER TABLE envelopes ADD COLUMN body_id BIGINT;
CREATE INDEX envelopes_body ON envelopes (body_id) WHERE body_id IS NOT NULL;
