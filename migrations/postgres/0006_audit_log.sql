-- The tamper-evident audit log (docs/AUDIT.md). Each row holds exactly what the chain
-- hashes (server/src/audit/chain.rs), so a verifier recomputes every hash from the rows.
-- No row holds message content, a credential, a token or a ciphertext size.
CREATE TABLE audit_log (
    seq            BIGINT PRIMARY KEY,
    time_ms        BIGINT NOT NULL,
    action         TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    actor          TEXT,
    target_user    TEXT,
    target_device  BIGINT,
    source_ip      TEXT,
    -- A JSON object of strings, keys in order: the entry's details.
    details        TEXT NOT NULL,
    prev_hash      BYTEA NOT NULL,
    hash           BYTEA NOT NULL
);

-- The end of the chain. Every append updates this one row first
-- (UPDATE ... RETURNING), so concurrent appenders serialize on it and the chain never
-- forks; it also records how long the log was, which a deletion of its last rows does not
-- change.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

-- Signed checkpoints of the chain (server/src/audit/checkpoint.rs), newest last. The
-- signing key is kept outside the database; outside parties keep copies of these.
CREATE TABLE audit_checkpoints (
    id          BIGSERIAL PRIMARY KEY,
    seq         BIGINT NOT NULL,
    head        BYTEA NOT NULL,
    time_ms     BIGINT NOT NULL,
    public_key  BYTEA NOT NULL,
    signature   BYTEA NOT NULL
);
