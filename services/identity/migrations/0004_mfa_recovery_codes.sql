CREATE TABLE mfa_recovery_codes (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    used_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX mfa_recovery_codes_by_user ON mfa_recovery_codes (user_id);
