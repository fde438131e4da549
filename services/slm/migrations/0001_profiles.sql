CREATE TABLE model_profiles (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    upstream TEXT NOT NULL,
    model TEXT NOT NULL,
    temperature DOUBLE PRECISION,
    max_tokens BIGINT,
    fallbacks TEXT NOT NULL,
    prompt_price BIGINT NOT NULL,
    completion_price BIGINT NOT NULL,
    currency TEXT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
