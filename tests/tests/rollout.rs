//! The kill switch: the rollout policy turned off stops every extension call on every path
//! (service, wasm, REST) with `capability-denied` and keeps every byte; an allowlist lets only
//! the listed extensions through; turning it back on restores the same data.

use alga_storage::model::PutOptions;
use alga_storage::{RolloutPolicy, StorageError};
use alga_storage_tests::gateway::TestGateway;
use alga_storage_tests::*;

#[tokio::test]
async fn kill_switch_off_and_on_keeps_all_data() {
    let db = TestDb::new().await;
    let service = db.service();
    let a = granted("tenant-a", "install-a").extension("ext-a");
    let b = granted("tenant-a", "install-b").extension("ext-b");
    for (ctx, n) in [(&a, 20), (&b, 5)] {
        for i in 0..n {
            service
                .put(
                    ctx,
                    "ns",
                    &format!("k{i}"),
                    &format!("{{\"i\":{i}}}"),
                    &PutOptions::default(),
                )
                .await
                .unwrap();
        }
    }
    let usage_before = service.usage(&a).await.unwrap();
    let gateway = TestGateway::start(service.clone(), &[]).await;
    let http = reqwest::Client::new();
    let token = gateway.mint(&{
        let mut claims =
            gateway.claims("tenant-a", "install-a", &[alga_storage::STORAGE_CAPABILITY]);
        claims.extension = "ext-a".into();
        claims
    });
    let rest_status = || async {
        http.get(gateway.url("/namespaces/ns/records/k1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(rest_status().await, 200);

    // Off: the service, the REST gateway (sharing the switch) and components are all refused.
    service.set_rollout(RolloutPolicy::Off);
    for result in [
        service.get(&a, "ns", "k1").await.map(|_| ()),
        service
            .put(&a, "ns", "k1", "1", &PutOptions::default())
            .await
            .map(|_| ()),
        service
            .delete(&a, "ns", "k1", Default::default())
            .await
            .map(|_| ()),
        service.usage(&a).await.map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(StorageError::CapabilityDenied(_))),
            "{result:?}"
        );
    }
    assert_eq!(rest_status().await, 403);
    // The fixture asserts that every call, of a granted install, is capability-denied.
    let outcome = run_fixture_as(service.clone(), STORE_CAPABILITY_DENIED, a.clone(), &[]).await;
    assert_success("store_capability_denied under rollout off", &outcome);

    // Staged: only ext-b.
    service.set_rollout(RolloutPolicy::parse("ext-b").unwrap());
    assert!(matches!(
        service.get(&a, "ns", "k1").await,
        Err(StorageError::CapabilityDenied(_))
    ));
    assert!(service.get(&b, "ns", "k1").await.unwrap().is_some());
    assert_eq!(rest_status().await, 403);

    // On again: every byte is still there, counters unchanged.
    service.set_rollout(RolloutPolicy::All);
    assert_eq!(service.rollout(), RolloutPolicy::All);
    assert_eq!(rest_status().await, 200);
    assert_eq!(service.usage(&a).await.unwrap(), usage_before);
    for i in 0..20 {
        let record = service
            .get(&a, "ns", &format!("k{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            record.value.as_deref(),
            Some(format!("{{\"i\": {i}}}").as_str())
        );
        assert_eq!(record.revision, 1);
    }
}
