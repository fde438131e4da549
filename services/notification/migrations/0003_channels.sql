-- The outgoing queue carries Slack messages beside emails: which channel, and whom the
-- message tells (Slack posts through the tenant's Slack tool, acting for them).
ALTER TABLE email_deliveries ADD COLUMN channel TEXT NOT NULL DEFAULT 'email';
ALTER TABLE email_deliveries ADD COLUMN user_id TEXT NOT NULL DEFAULT '';
