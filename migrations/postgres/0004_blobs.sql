-- The blob store. A blob is an opaque byte string (an attachment the client encrypted)
-- kept as a file in the blob directory: `<id>.part` while it is uploaded, `<id>` once
-- complete. Its key and digest never reach the server. A row reserves `size` bytes of the
-- uploading account's quota until the blob is deleted or expires.

CREATE TABLE blobs (
    id          BYTEA PRIMARY KEY,           -- 16 random bytes
    account_id  BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    device_id   BIGINT NOT NULL,             -- the uploading device
    size        BIGINT NOT NULL,             -- the declared, exact size
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX blobs_account ON blobs (account_id);
CREATE INDEX blobs_expiry ON blobs (expires_at);
