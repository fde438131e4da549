-- Multi-agent runs and projects: whose each is (the workflow engine keeps the rest),
-- written when the run is asked for, so its initiator can find it before it has said
-- anything.
CREATE TABLE agent_runs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    initiator TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX agent_runs_tenant_kind ON agent_runs (tenant_id, kind, created_at);
