-- Full-text search over memories and chunks: a `simple` tsvector (no stemming, so
-- names and ids match as written) in a GIN index, ranked by ts_rank_cd.
CREATE TABLE memory_text (
    tenant_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
    PRIMARY KEY (tenant_id, item_id)
);
CREATE INDEX memory_text_search ON memory_text USING GIN (tsv);
