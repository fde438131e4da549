-- Every version of each tenant's settings (`scope` = `tenant`) and each user's
-- preferences (`user:<subject>`): the document after the change (only what was set;
-- readers get the defaults laid under it) and before it. The newest is current.
CREATE TABLE settings_versions (
    tenant_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    version BIGINT NOT NULL,
    document TEXT NOT NULL,
    previous TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, scope, version)
);

-- Feature flags: a tenant's own (`tenant_id` its id) over the platform's defaults
-- (`tenant_id` empty).
CREATE TABLE settings_flags (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
