-- Device linking. A new device opens a channel with its provisioning public key; an
-- existing device of the account answers with a sealed message (opaque here) and the hash
-- of a one-time link token; the new device presents the token to add itself. Channels
-- expire after a few minutes and are deleted when used.

CREATE TABLE provisioning_channels (
    id          BYTEA PRIMARY KEY,
    public_key  BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    account_id  BIGINT REFERENCES accounts(id) ON DELETE CASCADE,
    token_hash  BYTEA,
    message     BYTEA
);
CREATE INDEX provisioning_expiry ON provisioning_channels (expires_at);
