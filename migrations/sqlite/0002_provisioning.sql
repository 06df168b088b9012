-- Device linking. A new device opens a channel with its provisioning public key; an
-- existing device of the account answers with a sealed message (opaque here) and the hash
-- of a one-time link token; the new device presents the token to add itself. Channels
-- expire after a few minutes and are deleted when used.

CREATE TABLE provisioning_channels (
    id          BLOB PRIMARY KEY NOT NULL,
    public_key  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    account_id  INTEGER REFERENCES accounts(id) ON DELETE CASCADE,
    token_hash  BLOB,
    message     BLOB
) WITHOUT ROWID;
CREATE INDEX provisioning_expiry ON provisioning_channels (expires_at);
