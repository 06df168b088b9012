-- Tacit relay schema (SQLite). Every blob here is either public key material or opaque
-- ciphertext; credentials and invites are stored only as SHA-256 hashes.

CREATE TABLE invites (
    token_hash  BLOB PRIMARY KEY NOT NULL,
    created_at  INTEGER NOT NULL,
    used_at     INTEGER
) WITHOUT ROWID;

CREATE TABLE accounts (
    id              INTEGER PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    -- Device numbers are never reused: a removed device's number stays burnt.
    next_device_id  INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE devices (
    account_id          INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    device_id           INTEGER NOT NULL,
    name                TEXT,
    credential_hash     BLOB NOT NULL,
    created_at          INTEGER NOT NULL,
    identity_key        BLOB NOT NULL,
    signed_prekey_id    INTEGER NOT NULL,
    signed_prekey       BLOB NOT NULL,
    signed_prekey_sig   BLOB NOT NULL,
    kem_prekey_id       INTEGER NOT NULL,
    kem_prekey          BLOB NOT NULL,
    kem_prekey_sig      BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;

-- kind 0 = one-time X25519 prekey, 1 = one-time ML-KEM prekey; both signed by the client.
CREATE TABLE one_time_prekeys (
    account_id  INTEGER NOT NULL,
    device_id   INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    key_id      INTEGER NOT NULL,
    public_key  BLOB NOT NULL,
    signature   BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id, kind, key_id),
    FOREIGN KEY (account_id, device_id) REFERENCES devices(account_id, device_id) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE envelopes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      INTEGER NOT NULL,
    device_id       INTEGER NOT NULL,
    sender          TEXT NOT NULL,
    sender_device   INTEGER NOT NULL,
    server_ts       INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    ciphertext      BLOB NOT NULL,
    FOREIGN KEY (account_id, device_id) REFERENCES devices(account_id, device_id) ON DELETE CASCADE
);
CREATE INDEX envelopes_mailbox ON envelopes (account_id, device_id, id);
CREATE INDEX envelopes_expiry ON envelopes (expires_at);

-- Accepted sends by client message id, so that a retried send stores nothing new.
CREATE TABLE sent_messages (
    account_id          INTEGER NOT NULL,
    device_id           INTEGER NOT NULL,
    client_message_id   TEXT NOT NULL,
    server_ts           INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id, client_message_id)
) WITHOUT ROWID;
CREATE INDEX sent_messages_expiry ON sent_messages (expires_at);
