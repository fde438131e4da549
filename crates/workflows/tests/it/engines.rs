//! The engines the contract runs on, each able to "restart": stop one engine process
//! and start another over the same store or task queue.

use std::sync::Arc;

use somagent_common::config::{DatabaseUrl, WorkflowsUrl};
use somagent_common::infra::db::Db;
use somagent_workflows::local::LocalEngine;
use somagent_workflows::store::RunStore;
use somagent_workflows::temporal::TemporalEngine;
use somagent_workflows::{Engine, MIGRATIONS};

use crate::probe::{Probe, registry};

pub fn real_url(concern: &str) -> Option<String> {
    somagent_common::testing::required_env(&format!("{concern}_URL"))
}

pub enum Kind {
    Local,
    Temporal(somagent_common::config::TemporalTarget),
}

/// One engine "deployment" of a test: its store, and how to start a process of it.
pub struct Harness {
    pub name: String,
    pub db: Db,
    pub probe: Arc<Probe>,
    kind: Kind,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    /// A new engine process (the first, or the next after a shutdown).
    pub async fn engine(&self) -> Arc<dyn Engine> {
        match &self.kind {
            Kind::Local => {
                let engine = LocalEngine::new(self.db.clone(), registry(&self.probe));
                engine.keep_resuming();
                Arc::new(engine)
            }
            Kind::Temporal(target) => Arc::new(
                TemporalEngine::start(
                    target,
                    "contract",
                    registry(&self.probe),
                    RunStore::new(self.db.clone()),
                )
                .await
                .expect("a Temporal worker starts"),
            ),
        }
    }
}

async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::Sqlite {
        path: dir.path().join("{service}.db"),
    };
    let db = Db::connect(&url, "workflows").await.unwrap();
    db.migrate("workflows", MIGRATIONS).await.unwrap();
    (db, dir)
}

/// Every engine the contract runs on here: local on SQLite, local on PostgreSQL and
/// Temporal when their servers are configured.
pub async fn all() -> Vec<Harness> {
    let mut all = Vec::new();
    let (db, dir) = sqlite().await;
    all.push(Harness {
        name: "local/sqlite".into(),
        db,
        probe: Arc::default(),
        kind: Kind::Local,
        _dir: Some(dir),
    });
    if let Some(url) = real_url("DATABASE") {
        let schema = format!("wf_{}", uuid::Uuid::new_v4().simple());
        let db = Db::postgres(&url, &schema).await.unwrap();
        db.migrate("workflows", MIGRATIONS).await.unwrap();
        all.push(Harness {
            name: "local/postgres".into(),
            db,
            probe: Arc::default(),
            kind: Kind::Local,
            _dir: None,
        });
    }
    if let Some(url) = real_url("WORKFLOWS") {
        let queue = format!("contract-{}", uuid::Uuid::new_v4().simple());
        let url: WorkflowsUrl = format!("{url}?task_queue={queue}").parse().unwrap();
        let (db, dir) = sqlite().await;
        all.push(Harness {
            name: "temporal".into(),
            db,
            probe: Arc::default(),
            kind: Kind::Temporal(url.temporal().expect("a temporal:// url")),
            _dir: Some(dir),
        });
    }
    all
}
