//! Vectors in the platform's own store (SQLite for `somagent up`, or PostgreSQL), with
//! an exact in-process index per tenant and collection.
//!
//! Why exact: a tenant's partition is scored alone (no other tenant's vector is ever
//! read), and at the sizes a tenant's memory reaches on one machine (10K chunks) a
//! scan of unit vectors is about a millisecond on two cores with recall 1.0, which no
//! approximate index beats once its filtered-search and build costs are counted
//! (README: "Vector backends" has the measurements and the alternatives tried).
//!
//! The rows are the truth; the index is loaded from them on first use and kept in step
//! with this process's writes. Each write bumps the partition's version in the same
//! transaction, and a search first reads the version: if another process wrote, the
//! partition is loaded again, so a second replica on the same database never serves
//! stale or deleted vectors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use somagent_common::infra::db::Db;
use somagent_common::tenant::TenantId;
use sqlx::Row;
use tokio::sync::RwLock;
use uuid::Uuid;

use super::{Collection, Filter, Hit, Kind, Payload, Point, VectorError};

/// A tenant's vectors of one collection, as loaded.
#[derive(Default)]
struct Partition {
    /// The store's version these rows are as of.
    version: i64,
    dimensions: usize,
    ids: Vec<Uuid>,
    /// Row-major, `dimensions` numbers a row.
    vectors: Vec<f32>,
    payloads: Vec<Payload>,
    rows: HashMap<Uuid, usize>,
}

impl Partition {
    fn put(&mut self, point: Point) {
        match self.rows.get(&point.id) {
            Some(&row) => {
                let d = self.dimensions;
                self.vectors[row * d..(row + 1) * d].copy_from_slice(&point.vector);
                self.payloads[row] = point.payload;
            }
            None => {
                self.rows.insert(point.id, self.ids.len());
                self.ids.push(point.id);
                self.vectors.extend_from_slice(&point.vector);
                self.payloads.push(point.payload);
            }
        }
    }

    fn remove(&mut self, id: &Uuid) {
        let Some(row) = self.rows.remove(id) else {
            return;
        };
        let last = self.ids.len() - 1;
        let d = self.dimensions;
        if row != last {
            self.ids.swap(row, last);
            self.payloads.swap(row, last);
            self.vectors.copy_within(last * d..(last + 1) * d, row * d);
            self.rows.insert(self.ids[row], row);
        }
        self.ids.pop();
        self.payloads.pop();
        self.vectors.truncate(last * d);
    }

    /// The `limit` best rows `filter` lets through.
    fn search(&self, query: &[f32], filter: &Filter, limit: usize) -> Vec<Hit> {
        let d = self.dimensions;
        let everything =
            filter.kinds.is_empty() && filter.owners.is_empty() && filter.metadata.is_empty();
        // Kept sorted best first; `limit` is small (a page of results).
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(limit + 1);
        for (row, vector) in self.vectors.chunks_exact(d).enumerate() {
            if !everything && !filter.matches(&self.payloads[row]) {
                continue;
            }
            let score = dot(query, vector);
            if best.len() == limit && best[limit - 1].0 >= score {
                continue;
            }
            let at = best.partition_point(|(s, _)| *s >= score);
            best.insert(at, (score, row));
            best.truncate(limit);
        }
        best.into_iter()
            .map(|(score, row)| Hit {
                id: self.ids[row],
                score,
            })
            .collect()
    }
}

/// Brings a loaded partition to `version` by `change`, when it was one write behind
/// (this process's own write); otherwise another process wrote in between, and the
/// partition is dropped for the next search to load it all.
fn follow(loaded: &mut Option<Partition>, version: i64, change: impl FnOnce(&mut Partition)) {
    match loaded.as_mut() {
        Some(index) if index.version == version - 1 => {
            change(index);
            index.version = version;
        }
        _ => *loaded = None,
    }
}

/// The dot product, in eight lanes the compiler turns into vector instructions.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() - a.len() % 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

type Key = (String, String);
/// A partition's place: empty until loaded, dropped when another process wrote.
type Slot = Arc<RwLock<Option<Partition>>>;

#[derive(Clone)]
pub struct EmbeddedVectors {
    db: Db,
    partitions: Arc<Mutex<HashMap<Key, Slot>>>,
}

fn backend(e: impl std::fmt::Display) -> VectorError {
    VectorError::Backend(e.to_string())
}

fn to_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl EmbeddedVectors {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            partitions: Arc::default(),
        }
    }

    fn partition(&self, tenant: &TenantId, collection: &str) -> Slot {
        let mut all = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        all.entry((tenant.as_str().to_owned(), collection.to_owned()))
            .or_default()
            .clone()
    }

    /// The partition's version in the store (0 before its first write).
    async fn stored_version(
        &self,
        tenant: &TenantId,
        collection: &str,
    ) -> Result<i64, VectorError> {
        let row = sqlx::query(
            "SELECT version FROM memory_vector_versions WHERE tenant_id = $1 AND collection = $2",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .fetch_optional(self.db.pool())
        .await
        .map_err(backend)?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>(0).map_err(backend)?,
            None => 0,
        })
    }

    async fn load(
        &self,
        tenant: &TenantId,
        collection: &Collection,
    ) -> Result<Partition, VectorError> {
        let name = collection.name();
        // The version first: rows written after it make the partition newer than it
        // says, never older, and the next search loads again.
        let version = self.stored_version(tenant, &name).await?;
        let rows = sqlx::query(
            "SELECT id, vector, kind, owner_kind, owner_id, subject, source, position, metadata \
             FROM memory_vectors WHERE tenant_id = $1 AND collection = $2",
        )
        .bind(tenant.as_str())
        .bind(&name)
        .fetch_all(self.db.pool())
        .await
        .map_err(backend)?;
        let mut partition = Partition {
            version,
            dimensions: collection.dimensions as usize,
            ..Partition::default()
        };
        for row in rows {
            let id: String = row.try_get(0).map_err(backend)?;
            let bytes: Vec<u8> = row.try_get(1).map_err(backend)?;
            let kind: String = row.try_get(2).map_err(backend)?;
            let metadata: String = row.try_get(8).map_err(backend)?;
            let vector = from_bytes(&bytes);
            if vector.len() != partition.dimensions {
                return Err(VectorError::Backend(format!(
                    "stored vector {id} has {} numbers, its collection {}",
                    vector.len(),
                    partition.dimensions
                )));
            }
            partition.put(Point {
                id: Uuid::parse_str(&id).map_err(backend)?,
                vector,
                payload: Payload {
                    kind: Kind::parse(&kind).unwrap_or(Kind::Memory),
                    owner_kind: row.try_get(3).map_err(backend)?,
                    owner_id: row.try_get(4).map_err(backend)?,
                    subject: row.try_get(5).map_err(backend)?,
                    source: row.try_get(6).map_err(backend)?,
                    position: somagent_common::infra::db::get_u32(&row, 7).map_err(backend)?,
                    metadata: serde_json::from_str::<Map<String, Value>>(&metadata)
                        .unwrap_or_default(),
                },
            });
        }
        Ok(partition)
    }

    /// Bumps the partition's version in `tx`, returning the new one.
    async fn bump(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant: &TenantId,
        collection: &str,
    ) -> Result<i64, VectorError> {
        let row = sqlx::query(
            "INSERT INTO memory_vector_versions (tenant_id, collection, version) VALUES ($1, $2, 1) \
             ON CONFLICT (tenant_id, collection) DO UPDATE SET version = memory_vector_versions.version + 1 \
             RETURNING version",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .fetch_one(&mut **tx)
        .await
        .map_err(backend)?;
        row.try_get::<i64, _>(0).map_err(backend)
    }

    pub async fn upsert(
        &self,
        tenant: &TenantId,
        collection: &Collection,
        points: Vec<Point>,
    ) -> Result<(), VectorError> {
        let name = collection.name();
        let partition = self.partition(tenant, &name);
        // This process's writers one at a time, so the index follows the versions.
        let mut loaded = partition.write().await;
        let mut tx = self.db.begin().await.map_err(backend)?;
        for p in &points {
            sqlx::query(
                "INSERT INTO memory_vectors (tenant_id, collection, id, vector, kind, owner_kind, owner_id, subject, source, position, metadata) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (tenant_id, collection, id) DO UPDATE SET vector = excluded.vector, kind = excluded.kind, \
                 owner_kind = excluded.owner_kind, owner_id = excluded.owner_id, subject = excluded.subject, \
                 source = excluded.source, position = excluded.position, metadata = excluded.metadata",
            )
            .bind(tenant.as_str())
            .bind(&name)
            .bind(p.id.to_string())
            .bind(to_bytes(&p.vector))
            .bind(p.payload.kind.as_str())
            .bind(&p.payload.owner_kind)
            .bind(&p.payload.owner_id)
            .bind(&p.payload.subject)
            .bind(&p.payload.source)
            .bind(i64::from(p.payload.position))
            .bind(Value::Object(p.payload.metadata.clone()).to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        let version = Self::bump(&mut tx, tenant, &name).await?;
        tx.commit().await.map_err(backend)?;
        follow(&mut loaded, version, |index| {
            points.into_iter().for_each(|p| index.put(p))
        });
        Ok(())
    }

    pub async fn delete(
        &self,
        tenant: &TenantId,
        collection: &Collection,
        ids: &[Uuid],
    ) -> Result<(), VectorError> {
        let name = collection.name();
        let partition = self.partition(tenant, &name);
        let mut loaded = partition.write().await;
        let mut tx = self.db.begin().await.map_err(backend)?;
        for id in ids {
            sqlx::query(
                "DELETE FROM memory_vectors WHERE tenant_id = $1 AND collection = $2 AND id = $3",
            )
            .bind(tenant.as_str())
            .bind(&name)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        let version = Self::bump(&mut tx, tenant, &name).await?;
        tx.commit().await.map_err(backend)?;
        follow(&mut loaded, version, |index| {
            ids.iter().for_each(|id| index.remove(id))
        });
        Ok(())
    }

    pub async fn delete_source(&self, tenant: &TenantId, source: &str) -> Result<(), VectorError> {
        let rows = sqlx::query(
            "SELECT DISTINCT collection FROM memory_vectors WHERE tenant_id = $1 AND source = $2",
        )
        .bind(tenant.as_str())
        .bind(source)
        .fetch_all(self.db.pool())
        .await
        .map_err(backend)?;
        for row in rows {
            let name: String = row.try_get(0).map_err(backend)?;
            let partition = self.partition(tenant, &name);
            let mut loaded = partition.write().await;
            let mut tx = self.db.begin().await.map_err(backend)?;
            sqlx::query(
                "DELETE FROM memory_vectors WHERE tenant_id = $1 AND collection = $2 AND source = $3",
            )
            .bind(tenant.as_str())
            .bind(&name)
            .bind(source)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            let version = Self::bump(&mut tx, tenant, &name).await?;
            tx.commit().await.map_err(backend)?;
            follow(&mut loaded, version, |index| {
                let gone: Vec<Uuid> = index
                    .ids
                    .iter()
                    .zip(&index.payloads)
                    .filter(|(_, p)| p.source == source)
                    .map(|(id, _)| *id)
                    .collect();
                gone.iter().for_each(|id| index.remove(id));
            });
        }
        Ok(())
    }

    pub async fn search(
        &self,
        tenant: &TenantId,
        collection: &Collection,
        query: &[f32],
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, VectorError> {
        let name = collection.name();
        let version = self.stored_version(tenant, &name).await?;
        if version == 0 {
            return Ok(Vec::new());
        }
        let partition = self.partition(tenant, &name);
        {
            let loaded = partition.read().await;
            if let Some(index) = loaded.as_ref().filter(|i| i.version >= version) {
                return Ok(index.search(query, filter, limit));
            }
        }
        let mut loaded = partition.write().await;
        if loaded.as_ref().is_none_or(|i| i.version < version) {
            *loaded = Some(self.load(tenant, collection).await?);
        }
        Ok(loaded
            .as_ref()
            .map(|index| index.search(query, filter, limit))
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(source: &str) -> Payload {
        Payload {
            kind: Kind::Chunk,
            owner_kind: "tenant".into(),
            owner_id: String::new(),
            subject: String::new(),
            source: source.into(),
            position: 0,
            metadata: Map::new(),
        }
    }

    #[test]
    fn removing_a_row_keeps_every_other_row_findable() {
        let mut p = Partition {
            dimensions: 2,
            ..Partition::default()
        };
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for (i, id) in ids.iter().enumerate() {
            let angle = i as f32 * 0.4;
            p.put(Point {
                id: *id,
                vector: vec![angle.cos(), angle.sin()],
                payload: payload("d"),
            });
        }
        p.remove(&ids[1]);
        let hits = p.search(&[1.0, 0.0], &Filter::default(), 10);
        let found: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        assert_eq!(found, [ids[0], ids[2], ids[3]]);
        assert!((hits[0].score - 1.0).abs() < 1e-6);
        // Replacing a vector moves it.
        let below = [(-0.2f32).cos(), (-0.2f32).sin()];
        p.put(Point {
            id: ids[3],
            vector: below.to_vec(),
            payload: payload("d"),
        });
        assert_eq!(p.search(&below, &Filter::default(), 1)[0].id, ids[3]);
        assert_eq!(p.ids.len(), 3);
    }

    #[test]
    fn the_dot_product_counts_every_number() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let expected: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), expected);
    }
}
