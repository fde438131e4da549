-- Memories: a text per key and owner, embedded (its vector has the id `id` in the
-- vector backend). The owner is a kind (`user`, `session`, `agent`, `tenant`), the
-- session's or agent's id, and the user it belongs to (empty for shared ones).
CREATE TABLE memories (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    owner_kind TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    key TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    model TEXT NOT NULL,
    dimensions BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, owner_kind, owner_id, subject, key)
);
CREATE INDEX memories_expiring ON memories (expires_at);

-- Documents: the original is in object storage; its chunks here. Ingestion fills
-- `chunks_done` batch by batch; `status` is `ingesting`, `ready` or `failed`.
CREATE TABLE documents (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    content_type TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    object_key TEXT NOT NULL,
    status TEXT NOT NULL,
    chunks_total BIGINT NOT NULL,
    chunks_done BIGINT NOT NULL,
    error TEXT NOT NULL,
    model TEXT NOT NULL,
    dimensions BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, sha256)
);
CREATE TABLE chunks (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    section TEXT NOT NULL,
    text TEXT NOT NULL,
    start_offset BIGINT NOT NULL,
    end_offset BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, document_id, position)
);
