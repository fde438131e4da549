-- Tool calls of session turns that waited for a person's approval, and how each ended.
CREATE TABLE tool_approvals (
    tenant_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    turn BIGINT NOT NULL,
    call_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    action TEXT NOT NULL,
    arguments TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    resolved_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    resolved_at BIGINT,
    PRIMARY KEY (tenant_id, session_id, turn, call_id)
);
