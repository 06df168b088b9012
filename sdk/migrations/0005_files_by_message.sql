-- File records are keyed by the message that announced them (sender, conversation and the
-- sender's message id), not by blob id alone: the server picks blob ids and sees them, so a
-- blob id is only a claim. A blob id announced by a second sender (or with another
-- descriptor) is refused by the store, never merged into the first record. Records made
-- before this migration keep sender and message_id NULL (and their old sealing context).
CREATE TABLE files_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    blob_id TEXT NOT NULL,
    sender TEXT,
    peer TEXT NOT NULL,
    message_id TEXT,
    outgoing INTEGER NOT NULL,
    sender_device INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    descriptor_sealed BLOB NOT NULL,
    UNIQUE (sender, peer, message_id)
);
INSERT INTO files_v2
    (blob_id, sender, peer, message_id, outgoing, sender_device, sent_at, descriptor_sealed)
    SELECT blob_id, NULL, peer, NULL, outgoing, sender_device, sent_at, descriptor_sealed
    FROM files;
DROP TABLE files;
ALTER TABLE files_v2 RENAME TO files;
CREATE INDEX files_by_blob ON files (blob_id, id);
CREATE INDEX files_by_peer ON files (peer, sent_at);
