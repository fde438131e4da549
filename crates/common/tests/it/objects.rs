use bytes::Bytes;

use somagent_common::config::ObjectsUrl;
use somagent_common::infra::objects::{Objects, ObjectsError};

use crate::helpers::{real_url, tenant, unique};

fn stores() -> Vec<(Objects, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![(
        Objects::connect(&ObjectsUrl::File(dir.path().to_path_buf())).unwrap(),
        dir,
    )];
    if let Some(url) = real_url("OBJECTS") {
        all.push((
            Objects::connect(&url.parse().unwrap()).unwrap(),
            tempfile::tempdir().unwrap(),
        ));
    }
    all
}

#[tokio::test]
async fn objects_round_trip_and_list_sorted() {
    for (store, _dir) in stores() {
        let t = tenant(&unique("t"));
        store
            .put(&t, "reports/b.json", Bytes::from_static(b"{\"b\":1}"))
            .await
            .unwrap();
        store
            .put(&t, "reports/a.json", Bytes::from_static(b"{\"a\":1}"))
            .await
            .unwrap();
        store
            .put(&t, "other/c.txt", Bytes::from_static(b"c"))
            .await
            .unwrap();
        assert_eq!(
            store.get(&t, "reports/a.json").await.unwrap().unwrap(),
            Bytes::from_static(b"{\"a\":1}")
        );
        assert_eq!(
            store.list(&t, "reports").await.unwrap(),
            vec!["reports/a.json", "reports/b.json"]
        );
        assert_eq!(
            store.list(&t, "").await.unwrap().len(),
            3,
            "{}",
            store.engine()
        );
        store.delete(&t, "reports/a.json").await.unwrap();
        store.delete(&t, "reports/a.json").await.unwrap();
        assert_eq!(store.get(&t, "reports/a.json").await.unwrap(), None);
        store.ping().await.unwrap();
    }
}

#[tokio::test]
async fn a_tenant_never_reaches_another_tenants_objects() {
    for (store, _dir) in stores() {
        let (a, b) = (tenant(&unique("a")), tenant(&unique("b")));
        store
            .put(&a, "secret.txt", Bytes::from_static(b"a's"))
            .await
            .unwrap();
        assert_eq!(
            store.get(&b, "secret.txt").await.unwrap(),
            None,
            "{}",
            store.engine()
        );
        assert!(store.list(&b, "").await.unwrap().is_empty());
        for escape in ["../secret.txt", "x/../../secret.txt", "", "/abs", "a//b"] {
            let err = store.get(&b, escape).await.unwrap_err();
            assert!(
                matches!(err, ObjectsError::InvalidKey(_)),
                "{escape}: {err}"
            );
        }
    }
}
