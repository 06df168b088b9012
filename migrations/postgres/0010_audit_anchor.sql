-- Where the audit log starts once retention has pruned its oldest entries: the number and
-- hash of the last pruned entry (0 and all zeros while nothing was pruned). A verifier
-- starts the chain from here; the `audit-prune` entry that moved it records the same
-- values inside the chain (docs/AUDIT.md, "Retention").
CREATE TABLE audit_anchor (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    seq      BIGINT NOT NULL,
    hash     BYTEA NOT NULL,
    time_ms  BIGINT NOT NULL
);
INSERT INTO audit_anchor (id, seq, hash, time_ms) VALUES (1, 0, decode(repeat('00', 32), 'hex'), 0);
