-- Group state and sender keys get tables of their own (they were sealed secrets in `meta`
-- under names built from the group id, sender and device: `secret:group:<id>`,
-- `secret:group-key:<id>`, `secret:group-record:<id>:<sender>:<device>`). The store moves
-- the rows of an older store into these tables when it opens (see src/store/sqlite.rs):
-- the sealed values move unchanged and keep their sealing context, so the manifest's
-- digests still hold. `group_id` is the group id in its one spelling, 32 lowercase hex
-- digits.
CREATE TABLE groups (
    group_id TEXT PRIMARY KEY NOT NULL,
    state_sealed BLOB NOT NULL
);

-- Our own sender-key chain per group.
CREATE TABLE own_sender_keys (
    group_id TEXT PRIMARY KEY NOT NULL,
    chain_sealed BLOB NOT NULL
);

-- The record of each member device's sender-key chains.
CREATE TABLE sender_keys (
    group_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    device INTEGER NOT NULL,
    record_sealed BLOB NOT NULL,
    PRIMARY KEY (group_id, sender, device)
);
