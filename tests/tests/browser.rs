//! The iframe SDK in headless Chromium: a host page served by the test gateway embeds an
//! extension iframe from another origin (`localhost` vs `127.0.0.1`, so CORS is real), hands it
//! tokens over `postMessage`, and the iframe reads what a wasm component wrote and writes what a
//! wasm component then reads back identically.

use alga_storage::http::Gateway;
use alga_storage::http::auth::TokenClaims;
use alga_storage_tests::gateway::{TestGateway, test_config};
use alga_storage_tests::*;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::routing::get;
use serde_json::{Value, json};

/// Serves a file of the SDK folder with its content type, refusing paths that leave it.
fn file(relative: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    match read_file(relative) {
        Ok((kind, bytes)) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
        Err(status) => status.into_response(),
    }
}

fn read_file(relative: &str) -> Result<(&'static str, Vec<u8>), StatusCode> {
    if relative.contains("..") {
        return Err(StatusCode::BAD_REQUEST);
    }
    let path = iframe_sdk_dir().join(relative);
    let kind = match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    };
    let bytes = std::fs::read(&path).map_err(|_| StatusCode::NOT_FOUND)?;
    Ok((kind, bytes))
}

#[tokio::test]
async fn iframe_sdk_in_chromium_shares_records_with_wasm() {
    let dir = iframe_sdk_dir();
    let db = TestDb::new().await;
    let (tenant, install) = ("tenant-web", "install-web");
    let wasm_value = json!({"title": "from wasm ✓", "tags": ["a", "b"], "n": 1.5, "none": null});
    let wasm_metadata = json!({"by": "wasm"});
    let iframe_value = json!({"title": "from the iframe — ünïcode", "list": [1, [2, [3]]]});
    let (wasm_text, metadata_text) = (wasm_value.to_string(), wasm_metadata.to_string());
    let ctx = granted(tenant, install);
    let write = [
        ("ALGA_MODE", "write"),
        ("ALGA_KEY", "from/wasm"),
        ("ALGA_VALUE", wasm_text.as_str()),
        ("ALGA_METADATA", metadata_text.as_str()),
    ];
    let outcome = run_fixture_as(db.service(), STORE_INTEROP, ctx.clone(), &write).await;
    assert_success("store_interop write", &outcome);

    let service = db.service();
    let gw = TestGateway::serve_with(move |addr| {
        let frame_origin = format!("http://localhost:{}", addr.port());
        let token_claims = move || -> TokenClaims {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            TokenClaims {
                aud: alga_storage_tests::gateway::AUDIENCE.into(),
                sub: "browser-user".into(),
                tenant: tenant.into(),
                install: install.into(),
                extension: "web-ext".into(),
                caps: [alga_storage::STORAGE_CAPABILITY.to_owned()].into(),
                iat: now,
                exp: now + 120,
                nbf: None,
                quotas: None,
            }
        };
        Gateway::new(service, test_config(&[&frame_origin]))
            .router()
            .route(
                "/test/token",
                get(move || async move {
                    alga_storage_tests::gateway::test_key().mint(&token_claims())
                }),
            )
            .route(
                "/test/{page}",
                get(
                    |Path(page): Path<String>| async move { file(&format!("test/browser/{page}")) },
                ),
            )
            .route(
                "/sdk/{file}",
                get(|Path(name): Path<String>| async move { file(&format!("dist/{name}")) }),
            )
    })
    .await;

    let port = gw.addr.port();
    let host_page = format!(
        "http://127.0.0.1:{port}/test/host.html?frame={}&value={}",
        percent_encode(&format!("http://localhost:{port}")),
        percent_encode(&iframe_value.to_string())
    );
    let output = tokio::process::Command::new("node")
        .args(["test/browser/run.mjs", &host_page])
        .current_dir(&dir)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("the runner prints JSON");
    let result = &report["result"];
    assert_eq!(result["error"], Value::Null, "iframe failed: {result}");
    assert_eq!(
        result["origin"],
        format!("http://localhost:{port}"),
        "the iframe is cross-origin"
    );

    // The wasm component's record, read identically through the SDK.
    let from_wasm = &result["fromWasm"];
    assert_eq!(from_wasm["key"], "from/wasm");
    assert_eq!(from_wasm["value"], wasm_value);
    assert_eq!(from_wasm["metadata"], wasm_metadata);
    assert_eq!(from_wasm["revision"], 1);

    assert_eq!(
        result["written"],
        json!({"key": "from-iframe", "revision": 1, "created": true})
    );
    assert_eq!(result["counter"]["revision"], 1);
    let lease = &result["lease"];
    assert_eq!(
        (&lease["value"], &lease["metadata"]),
        (&json!("v2"), &json!({"by": "iframe"}))
    );
    let moved = lease["movedMs"].as_i64().unwrap();
    assert!(
        (-1500..=1500).contains(&moved),
        "update kept the expiry to within about half a second: {moved} ms"
    );
    assert_eq!(result["conflict"], json!({"isTyped": true, "current": 1}));
    assert_eq!(
        result["pages"],
        json!([["clicks", "from-iframe"], ["from/wasm"]]),
        "key byte order, two per page"
    );
    assert!(
        result["tokensIssued"].as_u64().unwrap() >= 1,
        "tokens came from the host page"
    );
    // Chromium logs every 4xx as a console error: the deliberate 412, and the 404 of `update`
    // reading a key that does not exist yet. Nothing else (no CORS or script errors).
    for problem in report["problems"].as_array().unwrap() {
        let text = problem.as_str().unwrap();
        let expected = text.contains("status of 412")
            || (text.contains("status of 404") && text.ends_with("/records/clicks"));
        assert!(expected, "unexpected browser error: {text}");
    }

    // And the other way: the component reads the iframe's record identically.
    let iframe_text = iframe_value.to_string();
    let read = [
        ("ALGA_MODE", "read"),
        ("ALGA_KEY", "from-iframe"),
        ("ALGA_VALUE", iframe_text.as_str()),
        ("ALGA_METADATA", r#"{"by":"iframe"}"#),
    ];
    let outcome = run_fixture_as(db.service(), STORE_INTEROP, ctx, &read).await;
    assert_success("store_interop read", &outcome);
}
