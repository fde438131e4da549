-- Publishers' Ed25519 keys, per tenant. A revoked key's versions stop installing and
-- running; the row stays so what it signed can still be named.
CREATE TABLE capsule_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX capsule_keys_tenant ON capsule_keys (tenant_id);

-- The platform's own signing key (for the capsules shipped as files), sealed under the
-- master key.
CREATE TABLE capsule_platform_keys (
    kid TEXT PRIMARY KEY,
    pkcs8 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Which publisher owns a capsule id: the first to submit it. Others cannot publish
-- versions of it.
CREATE TABLE capsule_owners (
    capsule_id TEXT PRIMARY KEY,
    publisher TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Every submitted version: immutable once submitted but for its review.
CREATE TABLE capsule_packages (
    id TEXT PRIMARY KEY,
    capsule_id TEXT NOT NULL,
    version TEXT NOT NULL,
    version_key TEXT NOT NULL,
    publisher TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    visibility TEXT NOT NULL,
    status TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    summary TEXT NOT NULL,
    category TEXT NOT NULL,
    tags TEXT NOT NULL,
    search_text TEXT NOT NULL,
    definition TEXT NOT NULL,
    attestation_hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    key_id TEXT NOT NULL,
    notes TEXT NOT NULL,
    reviewer TEXT,
    reviewed_at BIGINT,
    review_notes TEXT,
    created_at BIGINT NOT NULL,
    CONSTRAINT capsule_packages_capsule_id_version UNIQUE (capsule_id, version)
);
CREATE INDEX capsule_packages_status ON capsule_packages (status, visibility);

CREATE TABLE capsule_reviews (
    id TEXT PRIMARY KEY,
    package_id TEXT NOT NULL,
    reviewer_tenant TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL,
    notes TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX capsule_reviews_package ON capsule_reviews (package_id);

-- What each tenant runs, per environment, and what it ran before (to roll back to).
CREATE TABLE capsule_installations (
    tenant_id TEXT NOT NULL,
    capsule_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    version TEXT NOT NULL,
    previous_version TEXT,
    installed_by TEXT NOT NULL,
    installed_at BIGINT NOT NULL,
    notes TEXT NOT NULL,
    PRIMARY KEY (tenant_id, capsule_id, environment)
);

-- Every install, upgrade, rollback and uninstall.
CREATE TABLE capsule_installation_log (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    capsule_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    action TEXT NOT NULL,
    version TEXT,
    from_version TEXT,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX capsule_installation_log_tenant ON capsule_installation_log (tenant_id, capsule_id);

-- One rating per user and capsule.
CREATE TABLE capsule_ratings (
    capsule_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    stars BIGINT NOT NULL,
    comment TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (capsule_id, tenant_id, subject)
);

CREATE TABLE capsule_counts (
    capsule_id TEXT PRIMARY KEY,
    downloads BIGINT NOT NULL,
    runs BIGINT NOT NULL
);
