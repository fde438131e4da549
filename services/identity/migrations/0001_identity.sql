CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL,
    display_name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT tenants_slug UNIQUE (slug)
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    roles TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    mfa_secret TEXT,
    mfa_enabled BIGINT NOT NULL DEFAULT 0,
    mfa_last_step BIGINT,
    created_at BIGINT NOT NULL,
    CONSTRAINT users_tenant_id_username UNIQUE (tenant_id, username)
);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    pkcs8 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
