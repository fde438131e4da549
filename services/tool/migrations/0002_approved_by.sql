-- Who approved a call of an action that requires approval, inside a session turn.
ALTER TABLE tool_invocations ADD COLUMN approved_by TEXT NOT NULL DEFAULT '';
