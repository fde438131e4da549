-- Tenants' secrets: sealed under the master key, bound to their tenant and name (a
-- sealed value moved to another row does not open). Only the current value is kept;
-- `version` counts how often it was set.
CREATE TABLE settings_secrets (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    sealed TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
