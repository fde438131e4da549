-- Full-text search over memories and chunks, ranked by BM25 (FTS5's bm25()). The FTS
-- table holds only the text; its rowid is the `row` of the item it indexes, so an
-- item's text is replaced or deleted by key, never by a scan.
CREATE TABLE memory_text_items (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    UNIQUE (tenant_id, item_id)
);
CREATE VIRTUAL TABLE memory_text USING fts5(
    text,
    tokenize = 'unicode61 remove_diacritics 2'
);
