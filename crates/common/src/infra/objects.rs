//! Object storage (artifacts, deliverables, exports): local files or S3/MinIO through
//! `object_store`. Every key lives under `tenants/<tenant>/`, so one tenant's paths can
//! never name another's objects.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use crate::config::ObjectsUrl;
use crate::tenant::TenantId;

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("objects: {0}")]
    Config(String),
    #[error("objects: invalid key `{0}`: use /-separated names without `..` or empty parts")]
    InvalidKey(String),
    #[error("objects: {0}")]
    Backend(#[from] object_store::Error),
}

#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    engine: &'static str,
}

impl Objects {
    pub fn connect(url: &ObjectsUrl) -> Result<Self, ObjectsError> {
        match url {
            ObjectsUrl::File(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ObjectsError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
                let store = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
                Ok(Self {
                    store: Arc::new(store),
                    engine: "file",
                })
            }
            ObjectsUrl::S3(raw) => {
                let url = Url::parse(raw).map_err(|e| ObjectsError::Config(e.to_string()))?;
                let bucket = url.host_str().unwrap_or_default();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in url.query_pairs() {
                    builder = match key.as_ref() {
                        "endpoint" => builder
                            .with_endpoint(value.as_ref())
                            .with_allow_http(value.starts_with("http://")),
                        "region" => builder.with_region(value.as_ref()),
                        "access_key_id" => builder.with_access_key_id(value.as_ref()),
                        "secret_access_key" => builder.with_secret_access_key(value.as_ref()),
                        other => {
                            return Err(ObjectsError::Config(format!(
                                "objects_url: unknown option `{other}`"
                            )));
                        }
                    };
                }
                Ok(Self {
                    store: Arc::new(builder.build()?),
                    engine: "s3",
                })
            }
        }
    }

    pub fn engine(&self) -> &'static str {
        self.engine
    }

    fn path(tenant: &TenantId, key: &str) -> Result<Path, ObjectsError> {
        let valid = !key.is_empty()
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !valid {
            return Err(ObjectsError::InvalidKey(key.chars().take(200).collect()));
        }
        Path::parse(format!("tenants/{tenant}/{key}"))
            .map_err(|_| ObjectsError::InvalidKey(key.to_owned()))
    }

    pub async fn put(&self, tenant: &TenantId, key: &str, body: Bytes) -> Result<(), ObjectsError> {
        self.store
            .put(&Self::path(tenant, key)?, PutPayload::from(body))
            .await?;
        Ok(())
    }

    /// The object's bytes, or `None` if there is no such object.
    pub async fn get(&self, tenant: &TenantId, key: &str) -> Result<Option<Bytes>, ObjectsError> {
        match self.store.get(&Self::path(tenant, key)?).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the object; deleting a missing object is not an error.
    pub async fn delete(&self, tenant: &TenantId, key: &str) -> Result<(), ObjectsError> {
        match self.store.delete(&Self::path(tenant, key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The keys under `prefix` (relative to the tenant), sorted.
    pub async fn list(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<String>, ObjectsError> {
        let root = format!("tenants/{tenant}/");
        let base = if prefix.is_empty() {
            Path::parse(&root).map_err(|_| ObjectsError::InvalidKey(prefix.to_owned()))?
        } else {
            Self::path(tenant, prefix.trim_end_matches('/'))?
        };
        let mut keys: Vec<String> = self
            .store
            .list(Some(&base))
            .map_ok(|meta| meta.location.as_ref().trim_start_matches(&root).to_owned())
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// A round trip to the store, for readiness.
    pub async fn ping(&self) -> Result<(), ObjectsError> {
        match self.store.head(&Path::from("readiness-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl crate::readiness::Probe for Objects {
    async fn probe(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| e.to_string())
    }
}
