-- Sign-in with the company's OpenID Connect provider (docs/SSO.md).

-- The provider identity (iss, sub) an account is bound to. Sign-in finds the account by
-- it, never by the username claim (names change at the provider). Deleting the account
-- (its tombstone) removes the binding.
CREATE TABLE oidc_identities (
    account_id  BIGINT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (issuer, subject)
);

-- Tokens already used: SHA-256 of an ID token's compact form (ID tokens may lack a jti),
-- or of a logout token's issuer and jti. Inserted in the same transaction as what the
-- token does; kept until the token expires (ms since the epoch).
CREATE TABLE oidc_used_tokens (
    token_hash  BYTEA PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX oidc_used_tokens_expiry ON oidc_used_tokens (expires_at);

-- The provider session (the ID token's sid) a device was signed in with, so that a
-- logout token naming that sid reaches only those devices.
ALTER TABLE devices ADD COLUMN oidc_sid TEXT;
