-- Workflow runs moved to the tables of `somagent-workflows` (scope `workflows`).
DROP TABLE workflow_journal;
DROP TABLE workflow_runs;
