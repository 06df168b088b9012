-- Administration (docs/ADMIN.md): roles, disabled accounts, per-account quotas, devices'
-- last authentication, invites with expiry and use counts, and the revocations that every
-- node applies to its caches and sockets.

-- Roles besides member (every account is one). Granted and revoked only by an admin, or
-- on the server host (`tacit-server admin grant`).
CREATE TABLE account_roles (
    account_id  BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'auditor')),
    granted_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, role)
);

-- Set while an administrator has the account disabled: its devices authenticate no more,
-- and its name stays taken.
ALTER TABLE accounts ADD COLUMN disabled_at BIGINT;
-- The account's own limits (NULL: the server's).
ALTER TABLE accounts ADD COLUMN max_devices BIGINT;
ALTER TABLE accounts ADD COLUMN blob_quota_bytes BIGINT;

-- When the device last authenticated, recorded at most about once a minute.
ALTER TABLE devices ADD COLUMN last_seen_at BIGINT;

-- An invite admits up to max_uses registrations until it expires or is revoked.
ALTER TABLE invites ADD COLUMN expires_at BIGINT;
ALTER TABLE invites ADD COLUMN max_uses BIGINT NOT NULL DEFAULT 1;
ALTER TABLE invites ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;
ALTER TABLE invites ADD COLUMN revoked_at BIGINT;
UPDATE invites SET uses = 1 WHERE used_at IS NOT NULL;

-- Credentials revoked (a device removed, an account disabled or deleted) or restored (an
-- account enabled), in order. Every server node reads the rows after the last it saw, a
-- few times a second, and drops those devices' cached credentials and closes their
-- sockets: a change made on the server host or through another node takes effect on
-- every node within a second. Rows are kept for ten minutes.
CREATE TABLE revocations (
    id          BIGSERIAL PRIMARY KEY,
    account_id  BIGINT NOT NULL,
    device_id   BIGINT NOT NULL,
    -- 'revoke' (removed or deleted), 'disable' (disabled) or 'restore' (enabled).
    kind        TEXT NOT NULL CHECK (kind IN ('revoke', 'disable', 'restore')),
    created_at  BIGINT NOT NULL
);
CREATE INDEX revocations_created ON revocations (created_at);
