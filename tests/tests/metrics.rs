//! `/metrics` after known operations: counters by operation and outcome, bytes, quota events,
//! latency histograms and pool gauges, with no tenant, install or key in any label.

use std::collections::BTreeMap;

use alga_storage::Limits;
use alga_storage::model::{Precondition, PutOptions};
use alga_storage_tests::gateway::TestGateway;
use alga_storage_tests::*;

/// Every sample of an OpenMetrics text: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

#[tokio::test]
async fn scrape_counts_known_operations() {
    let db = TestDb::new().await;
    let limits = Limits {
        max_keys_per_namespace: 5,
        ..Limits::DEFAULT
    };
    let service = db.service().with_limits(limits, limits);
    let ctx = granted("tenant-secret", "install-secret");
    let put = |key: &'static str, value: &'static str| {
        let (service, ctx) = (service.clone(), ctx.clone());
        async move {
            service
                .put(&ctx, "ns", key, value, &PutOptions::default())
                .await
        }
    };
    // Five writes of 1 + 5 bytes each (key + value): the 4th crosses 80 %, the 5th 95 %.
    for key in ["a", "b", "c", "d", "e"] {
        put(key, "12345").await.unwrap();
    }
    assert!(put("f", "12345").await.is_err(), "quota");
    let stale = PutOptions {
        precondition: Precondition::Revision(7),
        ..Default::default()
    };
    assert!(service.put(&ctx, "ns", "a", "1", &stale).await.is_err());
    assert!(
        service
            .put(&ctx, "Bad!", "a", "1", &PutOptions::default())
            .await
            .is_err()
    );
    assert!(service.get(&ctx, "ns", "a").await.unwrap().is_some());
    assert!(service.get(&ctx, "ns", "missing").await.unwrap().is_none());
    assert_eq!(
        service
            .list(&ctx, "ns", &Default::default())
            .await
            .unwrap()
            .entries
            .len(),
        5
    );
    assert!(
        service
            .delete(&ctx, "ns", "e", Precondition::None)
            .await
            .unwrap()
    );

    let gateway = TestGateway::start(service.clone(), &[]).await;
    let response = reqwest::get(format!("http://{}/metrics", gateway.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text");
    for secret in ["tenant-secret", "install-secret", "\"ns\"", "missing"] {
        assert!(!text.contains(secret), "{secret} leaked into labels");
    }
    let m = samples(&text);
    let value = |name: &str| {
        *m.get(name)
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let ops = |operation: &str, outcome: &str| {
        value(&format!(
            "alga_storage_operations_total{{operation=\"{operation}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(ops("put", "ok"), 5.0);
    assert_eq!(ops("put", "quota-exceeded"), 1.0);
    assert_eq!(ops("put", "revision-conflict"), 1.0);
    assert_eq!(ops("put", "invalid-input"), 1.0);
    assert_eq!(ops("get", "ok"), 2.0);
    assert_eq!(ops("list", "ok"), 1.0);
    assert_eq!(ops("delete", "ok"), 1.0);
    assert_eq!(value("alga_storage_written_bytes_total"), 30.0);
    // One get returned "12345" (5 bytes), the list five values of 5 bytes.
    assert_eq!(value("alga_storage_read_bytes_total"), 30.0);
    assert_eq!(
        value("alga_storage_quota_rejections_total{quota=\"keys-per-namespace\"}"),
        1.0
    );
    for percent in ["80", "95"] {
        assert_eq!(
            value(&format!(
                "alga_storage_quota_near_limit_total{{quota=\"keys-per-namespace\",percent=\"{percent}\"}}"
            )),
            1.0
        );
    }
    assert_eq!(
        value("alga_storage_operation_duration_seconds_count{operation=\"put\"}"),
        8.0
    );
    assert_eq!(
        value("alga_storage_operation_duration_seconds_count{operation=\"get\"}"),
        2.0
    );
    assert!(value("alga_storage_operation_duration_seconds_sum{operation=\"get\"}") > 0.0);
    assert_eq!(value("alga_storage_pool_max_connections"), 4.0);
    assert!(value("alga_storage_pool_connections") >= 1.0);
    assert_eq!(value("alga_storage_pool_waiters"), 0.0);
    assert!(
        !text.contains("alga_storage_backend_errors_total{"),
        "no database errors happened"
    );

    // Embedders register the same metrics in their own registry.
    let mut registry = prometheus_client::registry::Registry::default();
    service.metrics().register(&mut registry);
    let mut own = String::new();
    prometheus_client::encoding::text::encode(&mut own, &registry).unwrap();
    assert_eq!(
        samples(&own).get("alga_storage_written_bytes_total"),
        Some(&30.0)
    );
}
