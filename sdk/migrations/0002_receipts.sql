-- Receipts. `uid` is the sender's random id of a message (it travels inside the encrypted
-- message and names it in receipts). `status`: for outgoing messages 0 sent, 1 delivered,
-- 2 read; for incoming ones 0 unread, 2 read.
ALTER TABLE messages ADD COLUMN uid TEXT;
ALTER TABLE messages ADD COLUMN status INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_uid ON messages (peer, uid);
