-- Disappearing messages: when a message (and a file it announced) is to be deleted, in
-- milliseconds since the Unix epoch; NULL keeps it. The value is also bound into the
-- seal of the row's body (and descriptor), so that clearing or moving it makes the row
-- fail to open rather than outlive its time. `saved_sealed` is where the file was saved
-- (sealed), deleted with the record.
ALTER TABLE messages ADD COLUMN expires_at INTEGER;
CREATE INDEX messages_by_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;
ALTER TABLE files ADD COLUMN expires_at INTEGER;
ALTER TABLE files ADD COLUMN saved_sealed BLOB;
CREATE INDEX files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;
