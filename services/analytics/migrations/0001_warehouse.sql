-- The warehouse on the service's own database (SQLite for `somagent up`, or
-- PostgreSQL): one table per kind of fact, each event once (its id is the key).
-- The columns are those of `src/warehouse/tables.rs`; a test checks they agree.
CREATE TABLE an_events (
    event_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    topic TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT NOT NULL
);
CREATE INDEX an_events_tenant_time ON an_events (tenant, time_ms);
CREATE TABLE an_usage (
    event_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    item TEXT NOT NULL,
    upstream TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    currency TEXT NOT NULL,
    latency_ms BIGINT NOT NULL
);
CREATE INDEX an_usage_tenant_time ON an_usage (tenant, time_ms);
CREATE TABLE an_turns (
    event_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    turn BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    error_code TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL
);
CREATE INDEX an_turns_tenant_time ON an_turns (tenant, time_ms);
CREATE TABLE an_decisions (
    event_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    action TEXT NOT NULL,
    tool TEXT NOT NULL,
    allowed BIGINT NOT NULL,
    severity TEXT NOT NULL,
    score BIGINT NOT NULL,
    rule_ids TEXT NOT NULL,
    session_id TEXT NOT NULL
);
CREATE INDEX an_decisions_tenant_time ON an_decisions (tenant, time_ms);
CREATE TABLE an_model_failures (
    event_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    profile TEXT NOT NULL,
    upstream TEXT NOT NULL,
    failure TEXT NOT NULL,
    status BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL
);
CREATE INDEX an_model_failures_tenant_time ON an_model_failures (tenant, time_ms);
CREATE TABLE an_tool_calls (
    event_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    status BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX an_tool_calls_tenant_time ON an_tool_calls (tenant, time_ms);
CREATE TABLE an_workflows (
    event_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX an_workflows_tenant_time ON an_workflows (tenant, time_ms);
CREATE TABLE an_governance (
    event_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX an_governance_tenant_time ON an_governance (tenant, time_ms);
