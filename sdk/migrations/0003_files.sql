-- Files received or sent. The descriptor (file name, size, blob id, attachment key and
-- digest, as the file message carried them) is sealed under the store key; in clear are
-- only the blob id (to look a file up; the server knows it too), the peer, the direction,
-- the sending device and the time.
CREATE TABLE files (
    blob_id TEXT PRIMARY KEY NOT NULL,
    peer TEXT NOT NULL,
    outgoing INTEGER NOT NULL,
    sender_device INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    descriptor_sealed BLOB NOT NULL
);
CREATE INDEX files_by_peer ON files (peer, sent_at);
