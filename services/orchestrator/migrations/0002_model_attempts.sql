-- How often each round of a turn's model call has started, so a retried call can tell
-- watchers that the answer starts over. Rows go when their turn finishes.
CREATE TABLE model_attempts (
    tenant_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    turn BIGINT NOT NULL,
    round BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, session_id, turn, round)
);
