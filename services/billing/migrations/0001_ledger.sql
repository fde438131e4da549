-- The usage ledger: one row per metered call, keyed by its usage event's id (an event
-- that comes again, or a second event for the same call, is entered once). Money is in
-- integer micro-units of the row's currency.
CREATE TABLE billing_ledger (
    event_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    call_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    item TEXT NOT NULL,
    detail TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    prompt_price_micros BIGINT NOT NULL,
    completion_price_micros BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    currency TEXT NOT NULL,
    event_time_ms BIGINT NOT NULL,
    ingested_at_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX billing_ledger_call ON billing_ledger (tenant_id, kind, call_id);
CREATE INDEX billing_ledger_time ON billing_ledger (tenant_id, event_time_ms, event_id);
