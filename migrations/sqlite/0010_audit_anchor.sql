-- Where the audit log starts once retention has pruned its oldest entries: the number and
-- hash of the last pruned entry (0 and all zeros while nothing was pruned), when it was
-- appended, when the prune ran (time_ms), and the audit key's signature over them (and
-- that key). A
-- verifier starts the chain from here; the `audit-prune` entry that moved it records the
-- same number and hash inside the chain (docs/AUDIT.md, "Retention").
CREATE TABLE audit_anchor (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    seq      BIGINT NOT NULL,
    hash     BLOB NOT NULL,
    time_ms  BIGINT NOT NULL,
    entry_time_ms  BIGINT NOT NULL DEFAULT 0,
    signature      BLOB,
    public_key     BLOB
);
INSERT INTO audit_anchor (id, seq, hash, time_ms) VALUES (1, 0, zeroblob(32), 0);
