CREATE TABLE constitution_keys (
    kid TEXT PRIMARY KEY,
    pkcs8 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE constitutions (
    tenant_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    document TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    key_id TEXT NOT NULL,
    published_by TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);
