-- Emails waiting to be sent, and sent: a row per notification and address, tried on
-- the retry schedule, leased by the sender that tries it. `not_before_ms` holds an
-- email until the recipient's quiet hours end.
CREATE TABLE email_deliveries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    address TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    leased_until_ms BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT NOT NULL,
    UNIQUE (notification_id, address)
);
CREATE INDEX email_deliveries_due ON email_deliveries (status, next_attempt_at_ms);
