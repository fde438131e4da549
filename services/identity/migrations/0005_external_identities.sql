CREATE TABLE external_identities (
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    claims_issued_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    CONSTRAINT external_identities_issuer_subject UNIQUE (issuer, subject),
    CONSTRAINT external_identities_user_id UNIQUE (user_id)
);
