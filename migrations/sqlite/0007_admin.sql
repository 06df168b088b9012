-- Administration (docs/ADMIN.md): roles, disabled accounts, per-account quotas, devices'
-- last authentication, invites with expiry and use counts, and the revocations that every
-- node applies to its caches and sockets.

-- Roles besides member (every account is one). Granted and revoked only by an admin, or
-- on the server host (`tacit-server admin grant`).
CREATE TABLE account_roles (
    account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'auditor')),
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, role)
) WITHOUT ROWID;

-- Set while an administrator has the account disabled: its devices authenticate no more,
-- and its name stays taken.
ALTER TABLE accounts ADD COLUMN disabled_at INTEGER;
-- The account's own limits (NULL: the server's).
ALTER TABLE accounts ADD COLUMN max_devices INTEGER;
ALTER TABLE accounts ADD COLUMN blob_quota_bytes INTEGER;

-- When the device last authenticated, recorded at most about once a minute.
ALTER TABLE devices ADD COLUMN last_seen_at INTEGER;

-- An invite admits up to max_uses registrations until it expires or is revoked.
ALTER TABLE invites ADD COLUMN expires_at INTEGER;
ALTER TABLE invites ADD COLUMN max_uses INTEGER NOT NULL DEFAULT 1;
ALTER TABLE invites ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invites ADD COLUMN revoked_at INTEGER;
UPDATE invites SET uses = 1 WHERE used_at IS NOT NULL;

-- Credentials revoked (a device removed, an account disabled or deleted) or restored (an
-- account enabled), in order. Every server node reads the rows after the last it saw, a
-- few times a second, and drops those devices' cached credentials and closes their
-- sockets: a change made on the server host or through another node takes effect on
-- every node within a second. Rows are kept for ten minutes.
CREATE TABLE revocations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  INTEGER NOT NULL,
    device_id   INTEGER NOT NULL,
    -- 'revoke' (removed or deleted), 'disable' (disabled) or 'restore' (enabled).
    kind        TEXT NOT NULL CHECK (kind IN ('revoke', 'disable', 'restore')),
    created_at  INTEGER NOT NULL
);
CREATE INDEX revocations_created ON revocations (created_at);
