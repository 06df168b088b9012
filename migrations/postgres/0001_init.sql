-- Tacit relay schema (PostgreSQL). Every bytea here is either public key material or
-- opaque ciphertext; credentials and invites are stored only as SHA-256 hashes.

CREATE TABLE invites (
    token_hash  BYTEA PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE accounts (
    id              BIGSERIAL PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    -- Device numbers are never reused: a removed device's number stays burnt.
    next_device_id  BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE devices (
    account_id          BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    device_id           BIGINT NOT NULL,
    name                TEXT,
    credential_hash     BYTEA NOT NULL,
    created_at          BIGINT NOT NULL,
    identity_key        BYTEA NOT NULL,
    signed_prekey_id    BIGINT NOT NULL,
    signed_prekey       BYTEA NOT NULL,
    signed_prekey_sig   BYTEA NOT NULL,
    kem_prekey_id       BIGINT NOT NULL,
    kem_prekey          BYTEA NOT NULL,
    kem_prekey_sig      BYTEA NOT NULL,
    PRIMARY KEY (account_id, device_id)
);

-- kind 0 = one-time X25519 prekey, 1 = one-time ML-KEM prekey; both signed by the client.
CREATE TABLE one_time_prekeys (
    account_id  BIGINT NOT NULL,
    device_id   BIGINT NOT NULL,
    kind        BIGINT NOT NULL,
    key_id      BIGINT NOT NULL,
    public_key  BYTEA NOT NULL,
    signature   BYTEA NOT NULL,
    PRIMARY KEY (account_id, device_id, kind, key_id),
    FOREIGN KEY (account_id, device_id) REFERENCES devices(account_id, device_id) ON DELETE CASCADE
);

CREATE TABLE envelopes (
    id              BIGSERIAL PRIMARY KEY,
    account_id      BIGINT NOT NULL,
    device_id       BIGINT NOT NULL,
    sender          TEXT NOT NULL,
    sender_device   BIGINT NOT NULL,
    server_ts       BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    ciphertext      BYTEA NOT NULL,
    FOREIGN KEY (account_id, device_id) REFERENCES devices(account_id, device_id) ON DELETE CASCADE
);
CREATE INDEX envelopes_mailbox ON envelopes (account_id, device_id, id);
CREATE INDEX envelopes_expiry ON envelopes (expires_at);

-- Accepted sends by client message id, so that a retried send stores nothing new.
CREATE TABLE sent_messages (
    account_id          BIGINT NOT NULL,
    device_id           BIGINT NOT NULL,
    client_message_id   TEXT NOT NULL,
    server_ts           BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    PRIMARY KEY (account_id, device_id, client_message_id)
);
CREATE INDEX sent_messages_expiry ON sent_messages (expires_at);
