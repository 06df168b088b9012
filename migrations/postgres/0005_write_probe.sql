-- One row that the server rewrites to learn whether writes succeed again after a failure
-- (a full disk, a failing database): /readyz stays "not ready" until this write commits.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at BIGINT NOT NULL
);
