-- Budgets: each tenant's set, in the order written. `budget_key` is what a budget
-- counts (scope, metric, currency, period): two budgets never count the same thing,
-- and a budget renamed or given a new limit keeps its spend.
CREATE TABLE billing_budgets (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    budget_key TEXT NOT NULL,
    scope TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    period TEXT NOT NULL,
    limit_amount BIGINT NOT NULL,
    soft_percent BIGINT NOT NULL,
    currency TEXT NOT NULL,
    position BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE UNIQUE INDEX billing_budgets_tenant_id_budget_key ON billing_budgets (tenant_id, budget_key);

-- What each budget spent in each period (`tenant|budget key|period label`), as settled:
-- where a counter starts when a process (or Redis) has not seen it yet.
CREATE TABLE billing_budget_spend (
    counter TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    spent BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Reservations already settled, so a settle that comes twice counts once.
CREATE TABLE billing_budget_settlements (
    reservation_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    settled_at_ms BIGINT NOT NULL
);
CREATE INDEX billing_budget_settlements_time ON billing_budget_settlements (settled_at_ms);
