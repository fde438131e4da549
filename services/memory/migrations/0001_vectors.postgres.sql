-- The embedded vector backend's rows (SOMAGENT_VECTORS_URL=local://): one per memory or
-- chunk, in its tenant's partition of one embedding model's collection; the vector as
-- little-endian 32-bit floats of unit length.
CREATE TABLE memory_vectors (
    tenant_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    vector BYTEA NOT NULL,
    kind TEXT NOT NULL,
    owner_kind TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    source TEXT NOT NULL,
    position BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (tenant_id, collection, id)
);
CREATE INDEX memory_vectors_by_source ON memory_vectors (tenant_id, source);
-- Bumped with every write to a partition: a process whose index is older loads it again.
CREATE TABLE memory_vector_versions (
    tenant_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, collection)
);
