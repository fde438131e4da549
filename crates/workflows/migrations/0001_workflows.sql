-- Runs of both engines: the local engine's state, and for Temporal the index of runs
-- by tenant (Temporal keeps the history; status is refreshed from it).
CREATE TABLE wf_runs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    engine TEXT NOT NULL,
    parent_id TEXT,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    state TEXT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX wf_runs_by_tenant ON wf_runs (tenant_id, created_at, id);
CREATE INDEX wf_runs_by_lease ON wf_runs (status, lease_until);

-- The local engine's record of each completed step.
CREATE TABLE wf_journal (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    ok BIGINT NOT NULL,
    output TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- When a timer or a signal's wait ends, fixed at the first ask so a restart does not
-- start the wait again.
CREATE TABLE wf_waits (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
