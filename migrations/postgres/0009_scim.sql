-- SCIM 2.0 provisioning by the company's identity provider (docs/SCIM.md).

-- The users the provider's SCIM client created. A user is linked to the Tacit account of
-- the same username, which may not exist yet (pre-provisioned) or ever. A user that is
-- not active (active = 0) keeps its name from being registered; deactivating it disables
-- the account.
CREATE TABLE scim_users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    external_id   TEXT,
    active        BIGINT NOT NULL,
    display_name  TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
