//! Vectors in a Qdrant server, through `qdrant-client` (gRPC): a collection per
//! embedding model, created on first use with cosine distance; the tenant an indexed
//! payload field marked `is_tenant` (Qdrant keeps each tenant's points together and
//! searches only them), and every request filtered by it, deletes included.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FieldType, Filter as QFilter, KeywordIndexParamsBuilder, PointId, PointStruct,
    QueryPointsBuilder, UpsertPointsBuilder, VectorParamsBuilder, r#match::MatchValue,
    point_id::PointIdOptions,
};
use serde_json::{Value, json};
use somagent_common::tenant::TenantId;
use uuid::Uuid;

use super::{Collection, Filter, Hit, Point, VectorError};

/// The payload fields filters use, each indexed.
const TENANT: &str = "tenant";
const KEYWORD_FIELDS: [&str; 5] = ["kind", "owner_kind", "owner_id", "subject", "source"];

#[derive(Clone)]
pub struct QdrantVectors {
    client: Arc<Qdrant>,
    /// Collections known to exist with their indexes.
    ready: Arc<Mutex<HashSet<String>>>,
    /// Starts the name of every collection this platform makes.
    prefix: String,
}

fn backend(e: impl std::fmt::Display) -> VectorError {
    VectorError::Backend(e.to_string())
}

fn keyword(field: &str, value: &str) -> Condition {
    Condition::matches(field, MatchValue::Keyword(value.to_owned()))
}

/// A metadata value as Qdrant matches it: strings exactly, integers, booleans.
fn metadata_condition(key: &str, value: &Value) -> Option<Condition> {
    let field = format!("metadata.{key}");
    match value {
        Value::String(s) => Some(keyword(&field, s)),
        Value::Bool(b) => Some(Condition::matches(field, *b)),
        Value::Number(n) => n.as_i64().map(|i| Condition::matches(field, i)),
        _ => None,
    }
}

impl QdrantVectors {
    /// Connects to `url` (`http://host:6334`, the gRPC port), with an API key if the
    /// server wants one.
    pub fn connect(url: &str, api_key: Option<String>, prefix: &str) -> Result<Self, VectorError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(std::time::Duration::from_secs(10))
            .connect_timeout(std::time::Duration::from_secs(5))
            .skip_compatibility_check()
            .build()
            .map_err(backend)?;
        Ok(Self {
            client: Arc::new(client),
            ready: Arc::default(),
            prefix: prefix.to_owned(),
        })
    }

    pub async fn ping(&self) -> Result<(), VectorError> {
        self.client
            .health_check()
            .await
            .map(|_| ())
            .map_err(backend)
    }

    /// Creates the collection and its payload indexes unless they exist.
    fn name(&self, collection: &Collection) -> String {
        format!("{}{}", self.prefix, collection.name())
    }

    async fn ensure(&self, collection: &Collection) -> Result<String, VectorError> {
        let name = self.name(collection);
        if self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&name)
        {
            return Ok(name);
        }
        if !self
            .client
            .collection_exists(&name)
            .await
            .map_err(backend)?
        {
            let created = self
                .client
                .create_collection(CreateCollectionBuilder::new(&name).vectors_config(
                    VectorParamsBuilder::new(u64::from(collection.dimensions), Distance::Cosine),
                ))
                .await;
            // Another replica may have made it first.
            if let Err(e) = created
                && !self
                    .client
                    .collection_exists(&name)
                    .await
                    .map_err(backend)?
            {
                return Err(backend(e));
            }
        }
        self.client
            .create_field_index(
                CreateFieldIndexCollectionBuilder::new(&name, TENANT, FieldType::Keyword)
                    .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true))
                    .wait(true),
            )
            .await
            .map_err(backend)?;
        for field in KEYWORD_FIELDS {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(&name, field, FieldType::Keyword)
                        .wait(true),
                )
                .await
                .map_err(backend)?;
        }
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        Ok(name)
    }

    /// The collections this service has made (by their name's prefix).
    async fn collections(&self) -> Result<Vec<String>, VectorError> {
        let all = self.client.list_collections().await.map_err(backend)?;
        Ok(all
            .collections
            .into_iter()
            .map(|c| c.name)
            .filter(|n| {
                n.strip_prefix(self.prefix.as_str())
                    .is_some_and(|rest| rest.starts_with("somagent_"))
            })
            .collect())
    }

    pub async fn upsert(
        &self,
        tenant: &TenantId,
        collection: &Collection,
        points: Vec<Point>,
    ) -> Result<(), VectorError> {
        let name = self.ensure(collection).await?;
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| {
                let payload = json!({
                    TENANT: tenant.as_str(),
                    "kind": p.payload.kind.as_str(),
                    "owner_kind": p.payload.owner_kind,
                    "owner_id": p.payload.owner_id,
                    "subject": p.payload.subject,
                    "source": p.payload.source,
                    "position": p.payload.position,
                    "metadata": Value::Object(p.payload.metadata),
                });
                let payload = qdrant_client::Payload::try_from(payload).map_err(backend)?;
                Ok(PointStruct::new(p.id.to_string(), p.vector, payload))
            })
            .collect::<Result<_, VectorError>>()?;
        self.client
            .upsert_points(UpsertPointsBuilder::new(&name, points).wait(true))
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub async fn delete(
        &self,
        tenant: &TenantId,
        collection: &Collection,
        ids: &[Uuid],
    ) -> Result<(), VectorError> {
        let name = self.name(collection);
        if !self
            .client
            .collection_exists(&name)
            .await
            .map_err(backend)?
        {
            return Ok(());
        }
        // By id and tenant both: an id of another tenant's point deletes nothing.
        let filter = QFilter::must([
            keyword(TENANT, tenant.as_str()),
            Condition::has_id(ids.iter().map(|id| PointId::from(id.to_string()))),
        ]);
        self.client
            .delete_points(DeletePointsBuilder::new(&name).points(filter).wait(true))
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub async fn delete_source(&self, tenant: &TenantId, source: &str) -> Result<(), VectorError> {
        for name in self.collections().await? {
            let filter =
                QFilter::must([keyword(TENANT, tenant.as_str()), keyword("source", source)]);
            self.client
                .delete_points(DeletePointsBuilder::new(&name).points(filter).wait(true))
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    pub async fn search(
        &self,
        tenant: &TenantId,
        collection: &Collection,
        query: Vec<f32>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, VectorError> {
        let name = self.name(collection);
        if !self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&name)
            && !self
                .client
                .collection_exists(&name)
                .await
                .map_err(backend)?
        {
            return Ok(Vec::new());
        }
        let mut must = vec![keyword(TENANT, tenant.as_str())];
        if !filter.kinds.is_empty() {
            must.push(Condition::matches(
                "kind",
                filter
                    .kinds
                    .iter()
                    .map(|k| k.as_str().to_owned())
                    .collect::<Vec<_>>(),
            ));
        }
        if !filter.owners.is_empty() {
            let owners = filter.owners.iter().map(|o| {
                Condition::from(QFilter::must([
                    keyword("owner_kind", &o.kind),
                    keyword("owner_id", &o.id),
                    keyword("subject", &o.subject),
                ]))
            });
            must.push(Condition::from(QFilter::should(owners)));
        }
        for (key, value) in &filter.metadata {
            match metadata_condition(key, value) {
                Some(condition) => must.push(condition),
                // A value no point can hold matches nothing.
                None => return Ok(Vec::new()),
            }
        }
        let found = self
            .client
            .query(
                QueryPointsBuilder::new(&name)
                    .query(query)
                    .filter(QFilter::must(must))
                    .limit(limit as u64),
            )
            .await
            .map_err(backend)?;
        Ok(found
            .result
            .into_iter()
            .filter_map(|p| {
                let id = match p.id?.point_id_options? {
                    PointIdOptions::Uuid(raw) => Uuid::parse_str(&raw).ok()?,
                    PointIdOptions::Num(_) => return None,
                };
                Some(Hit { id, score: p.score })
            })
            .collect())
    }
}
