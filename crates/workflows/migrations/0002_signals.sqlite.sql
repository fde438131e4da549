-- Signals sent to local runs, kept until the run reads them (taken_seq: the step that did).
CREATE TABLE wf_signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    taken_seq BIGINT
);
CREATE INDEX wf_signals_unread ON wf_signals (run_id, name, taken_seq, id);
