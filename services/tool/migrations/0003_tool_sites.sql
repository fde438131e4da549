-- Where a tenant's instance of a tool is served (a Jira site, GitHub Enterprise, a
-- self-hosted GitLab), over the tool's default base URL.
CREATE TABLE tool_sites (
    tenant_id TEXT NOT NULL,
    tool_id TEXT NOT NULL,
    base_url TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, tool_id)
);
