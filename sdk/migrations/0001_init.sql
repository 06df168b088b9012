-- The SDK's local store. Columns named *_sealed hold ChaCha20-Poly1305 ciphertext under
-- the store key (see src/store.rs); everything else is metadata the app needs to index.
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);

CREATE TABLE prekeys (
    kind INTEGER NOT NULL,          -- 1 signed, 2 one-time, 3 KEM
    id INTEGER NOT NULL,
    secret_sealed BLOB NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE TABLE sessions (
    username TEXT NOT NULL,
    device INTEGER NOT NULL,
    base_key BLOB NOT NULL,
    active INTEGER NOT NULL,        -- 1 for the session used to send
    updated_seq INTEGER NOT NULL,
    state_sealed BLOB NOT NULL,
    PRIMARY KEY (username, device, base_key)
);

CREATE TABLE contacts (
    username TEXT PRIMARY KEY NOT NULL,
    identity_key BLOB NOT NULL,     -- public: the pinned identity
    verified INTEGER NOT NULL,
    changed_identity_key BLOB       -- a new identity seen but not yet accepted
);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    outgoing INTEGER NOT NULL,
    sender_device INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    body_sealed BLOB NOT NULL
);
CREATE INDEX messages_by_peer ON messages (peer, id);
