//! The kill switch: the rollout policy turned off stops every extension call on every path
//! (service, wasm, REST) with `capability-denied` and keeps every byte; an allowlist lets only
//! the listed extensions through; turning it back on restores the same data.

use alga_storage::model::PutOptions;
use alga_storage::{RolloutPolicy, StorageError};
use alga_storage_tests::gateway::{self, TestGateway};
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
            gateway::claims("tenant-a", "install-a", &[alga_storage::STORAGE_CAPABILITY]);
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

/// `alga-storage serve --rollout-file`: the operator's kill switch for the shipped gateway.
/// Editing the file switches storage off, to an allowlist and on again without a restart; a
/// file that cannot be parsed keeps the policy in force; a bad file at start is refused.
#[tokio::test]
async fn the_gateways_rollout_file_switches_storage_without_a_restart() {
    use alga_storage::STORAGE_CAPABILITY;
    use alga_storage::http::auth::{TokenClaims, TokenQuotas};
    use alga_storage_tests::gateway::{AUDIENCE, KEY_ID, KEY_SECRET, test_key};
    use base64::Engine;
    use std::time::{Duration, Instant};

    let dir = fresh_dir("rollout");
    let policy = dir.join("rollout");
    let set = |text: &str| std::fs::write(&policy, text).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = format!(
        "{KEY_ID}={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(KEY_SECRET)
    );
    let argv = |policy_file: &str| {
        vec![
            "alga-storage".to_owned(),
            "--store".into(),
            dir.join("store.db").display().to_string(),
            "serve".into(),
            "--token-key".into(),
            key.clone(),
            "--audience".into(),
            AUDIENCE.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--rollout-file".into(),
            policy_file.into(),
        ]
    };

    set("");
    let error = alga_storage::cli::run(argv(&policy.display().to_string()))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("rollout file"), "{error:#}");

    set("all");
    // The command's future is not `Send`: it runs on this thread, beside the checks.
    let local = tokio::task::LocalSet::new();
    let server = local.spawn_local(alga_storage::cli::run(argv(&policy.display().to_string())));
    // Install `a` is of the extension `ext-a`, and so on.
    let claims = |install: &str| gateway::claims("t", install, &[STORAGE_CAPABILITY]);
    let token = |install: &str| test_key().mint(&claims(install));
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/ext-storage/v1/namespaces/ns/records/k");
    let put = |install: &str| {
        http.put(&url)
            .bearer_auth(token(install))
            .header("content-type", "application/json")
            .body(r#"{"value":"kept"}"#)
            .send()
    };
    // The status of `install`'s write once the gateway answers it with `status` (the file is
    // read every 2 s), or the last one seen after 10 s.
    let status_becomes = |install: &'static str, status: u16| {
        let put = &put;
        async move {
            let started = Instant::now();
            loop {
                let seen = match put(install).await {
                    Ok(reply) => reply.status().as_u16(),
                    Err(_) => 0,
                };
                if seen == status || started.elapsed() > Duration::from_secs(10) {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    local
        .run_until(async {
            assert_eq!(status_becomes("a", 201).await, 201);

            set("off");
            assert_eq!(status_becomes("a", 403).await, 403);
            set("");
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(
                put("a").await.unwrap().status(),
                403,
                "an empty file changes nothing"
            );

            set("ext-b");
            assert_eq!(status_becomes("b", 201).await, 201);
            assert_eq!(put("a").await.unwrap().status(), 403);

            set("all\n");
            assert_eq!(
                status_becomes("a", 200).await,
                200,
                "the record is still there"
            );
            let read = http.get(&url).bearer_auth(token("a")).send().await.unwrap();
            assert_eq!(read.status(), 200);
            let record: serde_json::Value = read.json().await.unwrap();
            assert_eq!(record["value"], "kept");

            // The shipped gateway takes a token's quotas as they are, above the defaults too.
            let planned = test_key().mint(&TokenClaims {
                quotas: Some(TokenQuotas {
                    namespaces: 1_000,
                    keys_per_namespace: 1_000_000,
                    total_bytes: 1 << 30,
                }),
                ..claims("planned")
            });
            let usage: serde_json::Value = http
                .get(format!("http://127.0.0.1:{port}/api/ext-storage/v1/usage"))
                .bearer_auth(planned)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(usage["totalBytes"]["limit"], 1u64 << 30);

            // A typo is not a policy: storage stays on.
            set("ALL");
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(put("a").await.unwrap().status(), 200);
        })
        .await;
    server.abort();
    std::fs::remove_dir_all(&dir).unwrap();
}
