-- The blob store. A blob is an opaque byte string (an attachment the client encrypted)
-- kept as a file in the blob directory: `<id>.part` while it is uploaded, `<id>` once
-- complete. Its key and digest never reach the server. A row reserves `size` bytes of the
-- uploading account's quota until the blob is deleted or expires.

CREATE TABLE blobs (
    id          BLOB PRIMARY KEY NOT NULL,   -- 16 random bytes
    account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    device_id   INTEGER NOT NULL,            -- the uploading device
    size        INTEGER NOT NULL,            -- the declared, exact size
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX blobs_account ON blobs (account_id);
CREATE INDEX blobs_expiry ON blobs (expires_at);
