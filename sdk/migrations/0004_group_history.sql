-- Group conversations are kept under peer = 'group:<id>'; `sender` names who wrote each
-- message there (NULL in one-to-one conversations, where `peer` and `outgoing` say it).
ALTER TABLE messages ADD COLUMN sender TEXT;
