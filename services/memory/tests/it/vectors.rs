//! One contract, every vector backend: nearest first by cosine, sizes checked, tenants
//! never mixed, filters applied during the search, deletes for real, collections apart.

use serde_json::{Map, json};
use somagent_common::config::{DatabaseUrl, VectorsUrl};
use somagent_common::infra::db::Db;
use somagent_common::tenant::TenantId;
use somagent_memory::vectors::{
    Collection, Filter, Kind, OwnerMatch, Payload, Point, VectorError, Vectors,
};
use uuid::Uuid;

pub struct Backend {
    pub name: &'static str,
    pub vectors: Vectors,
    /// A second process over the same store, where there is one.
    pub replica: Option<Vectors>,
    _db: Db,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::Sqlite {
        path: dir.path().join("{service}.db"),
    };
    let db = Db::connect(&url, "memory").await.unwrap();
    db.migrate("memory", somagent_memory::MIGRATIONS)
        .await
        .unwrap();
    (db, dir)
}

pub async fn postgres() -> Option<Db> {
    let url = somagent_common::testing::required_env("DATABASE_URL")?;
    let schema = format!("mem_{}", Uuid::new_v4().simple());
    let db = Db::postgres(&url, &schema).await.unwrap();
    db.migrate("memory", somagent_memory::MIGRATIONS)
        .await
        .unwrap();
    Some(db)
}

async fn backends() -> Vec<Backend> {
    let mut all = Vec::new();
    let (db, dir) = sqlite().await;
    let local: VectorsUrl = "local://".parse().unwrap();
    all.push(Backend {
        name: "local/sqlite",
        vectors: somagent_memory::vectors_for(&local, db.clone()).unwrap(),
        replica: Some(somagent_memory::vectors_for(&local, db.clone()).unwrap()),
        _db: db,
        _dir: Some(dir),
    });
    if let Some(db) = postgres().await {
        all.push(Backend {
            name: "local/postgres",
            vectors: somagent_memory::vectors_for(&local, db.clone()).unwrap(),
            replica: Some(somagent_memory::vectors_for(&local, db.clone()).unwrap()),
            _db: db,
            _dir: None,
        });
    }
    if let Some(url) = somagent_common::testing::required_env("QDRANT_URL") {
        let prefix = format!("t{}_", &Uuid::new_v4().simple().to_string()[..12]);
        let url: VectorsUrl = format!("{url}?prefix={prefix}").parse().unwrap();
        let (db, dir) = sqlite().await;
        all.push(Backend {
            name: "qdrant",
            vectors: somagent_memory::vectors_for(&url, db.clone()).unwrap(),
            replica: None,
            _db: db,
            _dir: Some(dir),
        });
    }
    all
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn payload(
    kind: Kind,
    owner: (&str, &str, &str),
    source: &str,
    metadata: serde_json::Value,
) -> Payload {
    Payload {
        kind,
        owner_kind: owner.0.into(),
        owner_id: owner.1.into(),
        subject: owner.2.into(),
        source: source.into(),
        position: 0,
        metadata: metadata.as_object().cloned().unwrap_or_default(),
    }
}

fn point(vector: Vec<f32>, payload: Payload) -> Point {
    Point {
        id: Uuid::new_v4(),
        vector,
        payload,
    }
}

/// A unit vector at `angle` radians in the first two of `size` dimensions.
fn at(angle: f32, size: usize) -> Vec<f32> {
    let mut v = vec![0.0; size];
    v[0] = angle.cos();
    v[1] = angle.sin();
    v
}

const DOC: (&str, &str, &str) = ("document", "", "");

#[tokio::test]
async fn every_vector_backend_keeps_the_contract() {
    for b in backends().await {
        contract(&b).await;
        eprintln!("{}: contract kept", b.name);
    }
}

async fn contract(b: &Backend) {
    let v = &b.vectors;
    let acme = tenant("acme");
    let globex = tenant("globex");
    let model = Collection {
        model: "test-model".into(),
        dimensions: 8,
    };

    // Nearest first, scored by cosine; vectors need not come in unit length.
    let near = point(
        at(0.1, 8),
        payload(Kind::Chunk, DOC, "doc-1", json!({"lang": "en"})),
    );
    let mid = point(
        at(0.6, 8),
        payload(Kind::Chunk, DOC, "doc-1", json!({"lang": "de"})),
    );
    let far = point(
        at(1.5, 8),
        payload(Kind::Chunk, DOC, "doc-2", json!({"lang": "en"})),
    );
    let mut scaled = near.clone();
    scaled.vector.iter_mut().for_each(|x| *x *= 7.0);
    v.upsert(&acme, &model, vec![scaled, mid.clone(), far.clone()])
        .await
        .unwrap();
    let hits = v
        .search(&acme, &model, at(0.0, 8), &Filter::default(), 10)
        .await
        .unwrap();
    let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
    assert_eq!(ids, [near.id, mid.id, far.id], "{}", b.name);
    assert!(
        (hits[0].score - 0.1f32.cos()).abs() < 1e-3,
        "{}: {}",
        b.name,
        hits[0].score
    );
    assert_eq!(
        v.search(&acme, &model, at(0.0, 8), &Filter::default(), 2)
            .await
            .unwrap()
            .len(),
        2
    );

    // Sizes are the collection's: never cut or padded.
    let wrong = point(vec![1.0; 7], payload(Kind::Chunk, DOC, "doc-3", json!({})));
    assert!(matches!(
        v.upsert(&acme, &model, vec![wrong]).await,
        Err(VectorError::WrongSize {
            expected: 8,
            got: 7
        })
    ));
    assert!(matches!(
        v.search(&acme, &model, vec![1.0; 9], &Filter::default(), 3)
            .await,
        Err(VectorError::WrongSize { .. })
    ));
    let zero = point(vec![0.0; 8], payload(Kind::Chunk, DOC, "doc-3", json!({})));
    assert!(matches!(
        v.upsert(&acme, &model, vec![zero]).await,
        Err(VectorError::NotANumber)
    ));

    // Another tenant sees nothing of it, even with the same vectors, and deletes nothing.
    assert!(
        v.search(&globex, &model, at(0.1, 8), &Filter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let theirs = point(at(0.1, 8), payload(Kind::Chunk, DOC, "doc-1", json!({})));
    v.upsert(&globex, &model, vec![theirs.clone()])
        .await
        .unwrap();
    v.delete(&globex, &model, &[near.id]).await.unwrap();
    v.delete_source(&globex, "doc-2").await.unwrap();
    let hits = v
        .search(&acme, &model, at(0.0, 8), &Filter::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        hits.len(),
        3,
        "{}: another tenant's delete reached acme",
        b.name
    );
    assert!(hits.iter().all(|h| h.id != theirs.id));

    // Filters apply during the search: what passes is found even when much nearer
    // vectors do not pass.
    let en = Filter {
        metadata: Map::from_iter([("lang".to_owned(), json!("en"))]),
        ..Filter::default()
    };
    let ids: Vec<Uuid> = v
        .search(&acme, &model, at(0.6, 8), &en, 10)
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(ids, [near.id, far.id], "{}", b.name);
    let alice = ("user", "", "alice");
    let bobs = ("user", "", "bob");
    let a = point(
        at(0.05, 8),
        payload(Kind::Memory, alice, "m-a", json!({"n": 1, "pinned": true})),
    );
    let bb = point(
        at(0.05, 8),
        payload(Kind::Memory, bobs, "m-b", json!({"n": 1})),
    );
    v.upsert(&acme, &model, vec![a.clone(), bb.clone()])
        .await
        .unwrap();
    let alices = Filter {
        kinds: vec![Kind::Memory],
        owners: vec![OwnerMatch {
            kind: "user".into(),
            id: String::new(),
            subject: "alice".into(),
        }],
        ..Filter::default()
    };
    let ids: Vec<Uuid> = v
        .search(&acme, &model, at(0.0, 8), &alices, 10)
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(ids, [a.id], "{}: owners", b.name);
    let typed = Filter {
        metadata: Map::from_iter([
            ("n".to_owned(), json!(1)),
            ("pinned".to_owned(), json!(true)),
        ]),
        ..Filter::default()
    };
    let ids: Vec<Uuid> = v
        .search(&acme, &model, at(0.0, 8), &typed, 10)
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(ids, [a.id], "{}: integer and boolean metadata", b.name);
    let chunks = Filter {
        kinds: vec![Kind::Chunk],
        owners: vec![OwnerMatch {
            kind: "document".into(),
            id: String::new(),
            subject: String::new(),
        }],
        ..Filter::default()
    };
    assert_eq!(
        v.search(&acme, &model, at(0.0, 8), &chunks, 10)
            .await
            .unwrap()
            .len(),
        3
    );

    // The same id again replaces its vector and payload.
    let mut moved = far.clone();
    moved.vector = at(0.0, 8);
    moved.payload.metadata = Map::from_iter([("lang".to_owned(), json!("fr"))]);
    v.upsert(&acme, &model, vec![moved]).await.unwrap();
    let hits = v
        .search(&acme, &model, at(0.0, 8), &chunks, 10)
        .await
        .unwrap();
    assert_eq!(hits[0].id, far.id, "{}: replaced", b.name);
    assert_eq!(hits.len(), 3);
    let fr = Filter {
        metadata: Map::from_iter([("lang".to_owned(), json!("fr"))]),
        ..Filter::default()
    };
    assert_eq!(
        v.search(&acme, &model, at(0.0, 8), &fr, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // Another model's vectors are another collection.
    let other = Collection {
        model: "other-model".into(),
        dimensions: 4,
    };
    let small = point(
        vec![1.0, 0.0, 0.0, 0.0],
        payload(Kind::Chunk, DOC, "doc-1", json!({})),
    );
    v.upsert(&acme, &other, vec![small.clone()]).await.unwrap();
    assert_eq!(
        v.search(
            &acme,
            &other,
            vec![1.0, 0.1, 0.0, 0.0],
            &Filter::default(),
            10
        )
        .await
        .unwrap()
        .len(),
        1
    );
    assert_eq!(
        v.search(&acme, &model, at(0.0, 8), &Filter::default(), 10)
            .await
            .unwrap()
            .len(),
        5
    );

    // Deleting by id, and by source across every collection, is for real.
    v.delete(&acme, &model, &[a.id]).await.unwrap();
    assert!(
        v.search(&acme, &model, at(0.0, 8), &alices, 10)
            .await
            .unwrap()
            .is_empty()
    );
    v.delete_source(&acme, "doc-1").await.unwrap();
    let left: Vec<Uuid> = v
        .search(&acme, &model, at(0.0, 8), &Filter::default(), 10)
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(left.len(), 2, "{}: {left:?}", b.name);
    assert!(left.contains(&far.id) && left.contains(&bb.id));
    assert!(
        v.search(
            &acme,
            &other,
            vec![1.0, 0.0, 0.0, 0.0],
            &Filter::default(),
            10
        )
        .await
        .unwrap()
        .is_empty()
    );
    // The other tenant's doc-1 is still there.
    assert_eq!(
        v.search(&globex, &model, at(0.1, 8), &Filter::default(), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // A second process over the same store sees every write and delete of the first.
    if let Some(replica) = &b.replica {
        assert_eq!(
            replica
                .search(&acme, &model, at(0.0, 8), &Filter::default(), 10)
                .await
                .unwrap()
                .len(),
            2
        );
        let late = point(at(-0.3, 8), payload(Kind::Chunk, DOC, "doc-9", json!({})));
        v.upsert(&acme, &model, vec![late.clone()]).await.unwrap();
        let seen = replica
            .search(&acme, &model, at(-0.3, 8), &Filter::default(), 1)
            .await
            .unwrap();
        assert_eq!(
            seen[0].id, late.id,
            "{}: the replica missed a write",
            b.name
        );
        v.delete(&acme, &model, &[late.id]).await.unwrap();
        let seen = replica
            .search(&acme, &model, at(0.0, 8), &Filter::default(), 10)
            .await
            .unwrap();
        assert!(
            seen.iter().all(|h| h.id != late.id),
            "{}: the replica kept a deleted vector",
            b.name
        );
        // And the first sees the replica's.
        replica.delete_source(&acme, "doc-2").await.unwrap();
        assert!(
            v.search(&acme, &model, at(0.0, 8), &Filter::default(), 10)
                .await
                .unwrap()
                .iter()
                .all(|h| h.id != far.id)
        );
    }
}
