//! Randomized multi-tenant isolation across the wasm and REST paths: six installs (three
//! tenants × two installs with the same install ids) use the same namespaces and keys; no read
//! ever returns another install's data and no write lands in another install.

use alga_storage::wasm::command::{CommandRunner, RunOptions};
use alga_storage_tests::gateway::TestGateway;
use alga_storage_tests::*;
use serde_json::{Value, json};

const CALLERS: [(&str, &str); 6] = [
    ("tenant-1", "install-a"),
    ("tenant-1", "install-b"),
    ("tenant-2", "install-a"),
    ("tenant-2", "install-b"),
    ("tenant-3", "install-a"),
    ("tenant-3", "install-b"),
];

fn owner(caller: (&str, &str)) -> String {
    format!("{}/{}", caller.0, caller.1)
}

async fn random_isolation(engine: Engine) {
    let store = TestStore::new(engine).await;
    let gw = TestGateway::start(store.service(), &[]).await;
    let http = reqwest::Client::new();
    let tokens: Vec<String> = CALLERS.iter().map(|(t, i)| gw.token(t, i)).collect();
    // One compiled, linked component, instantiated per run as a Runner does.
    let runner = CommandRunner::new(store.service()).unwrap();
    let component = runner
        .compile(&std::fs::read(STORE_INTEROP).unwrap())
        .unwrap();
    let prepared = runner.prepare(&component).unwrap();
    let mut rng = Rng(0xdead_beef_1234_5678);
    let (mut reads, mut listed) = (0, 0);

    for step in 0..400 {
        let c = rng.below(CALLERS.len());
        let me = owner(CALLERS[c]);
        let token = &tokens[c];
        let ns = ["shared", "other"][rng.below(2)];
        let key = format!("k{}", rng.below(8));
        let record = format!("{}/namespaces/{ns}/records/{key}", gw.base);
        match rng.below(4) {
            0 => {
                let body = json!({"value": {"owner": me, "step": step}});
                let response = http
                    .put(&record)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
            }
            1 => {
                let response = http.get(&record).bearer_auth(token).send().await.unwrap();
                if response.status() == 200 {
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(body["value"]["owner"], me, "{me} read someone else's {key}");
                    reads += 1;
                } else {
                    assert_eq!(response.status(), 404);
                }
            }
            2 => {
                let page: Value = http
                    .get(format!("{}/namespaces/{ns}/records?limit=1000", gw.base))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for entry in page["entries"].as_array().unwrap() {
                    assert_eq!(
                        entry["value"]["owner"], me,
                        "{me} listed someone else's record"
                    );
                    listed += 1;
                }
            }
            _ => {
                let response = http
                    .delete(&record)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
            }
        }

        // Every 100 steps the wasm path joins in: each caller's component writes its own record
        // under the same key, then reads it back; the REST side sees only its own.
        if step % 100 == 99 {
            for (i, caller) in CALLERS.iter().enumerate() {
                let value = json!({"owner": owner(*caller), "from": "wasm"}).to_string();
                for mode in ["write", "read"] {
                    let options = RunOptions {
                        env: [
                            ("ALGA_MODE", mode),
                            ("ALGA_KEY", "same-key"),
                            ("ALGA_VALUE", value.as_str()),
                            ("ALGA_METADATA", "null"),
                        ]
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                        capture_output: true,
                        ..Default::default()
                    };
                    let call = granted(caller.0, caller.1);
                    let instance = runner.instantiate(&prepared, call, &options).await.unwrap();
                    let outcome = instance.run().await.unwrap();
                    assert_success(
                        &format!("store_interop {mode} as {}", owner(*caller)),
                        &outcome,
                    );
                }
                let body: Value = http
                    .get(format!("{}/namespaces/interop/records/same-key", gw.base))
                    .bearer_auth(&tokens[i])
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(body["value"]["owner"], owner(*caller));
            }
        }
    }
    assert!(
        reads > 20 && listed > 20,
        "the run read ({reads}) and listed ({listed}) records"
    );
}

on_both_engines!(random_isolation);
