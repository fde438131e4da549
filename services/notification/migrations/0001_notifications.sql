-- Each notification once: its id is derived from the event and its audience, so an
-- event delivered twice finds its row. `user_id` is empty for the tenant's
-- administrators' notifications (`audience = 'tenant_admins'`).
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    audience TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    data TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX notifications_inbox ON notifications (tenant_id, user_id, id);
CREATE INDEX notifications_created ON notifications (created_at_ms);

-- Who read what, when: one row per reader (an administrators' notification is read by
-- each administrator on their own).
CREATE TABLE notification_reads (
    notification_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    read_at_ms BIGINT NOT NULL,
    PRIMARY KEY (notification_id, user_id)
);

-- The tenants' webhook endpoints. `secret` is sealed under the master key, bound to
-- the tenant and endpoint.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    event_types TEXT NOT NULL, -- space-separated; empty: every type
    secret TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    disabled_reason TEXT NOT NULL,
    failing_since_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

-- The delivery queue and log in one: a row per message and endpoint, tried until it
-- is delivered or its tries run out (`dead`: the dead-letter list). A worker claims
-- due rows by leasing them, so replicas never send one twice at once.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    leased_until_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT NOT NULL,
    UNIQUE (endpoint_id, message_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at_ms);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (tenant_id, endpoint_id, id);

-- Every try of a delivery: when, the answer's status, how long it took, what failed.
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    number BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    status_code BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
