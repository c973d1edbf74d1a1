//! The TypeScript iframe SDK's tests (`guest-sdk/iframe/test`, node's test runner) against a real
//! gateway over PostgreSQL, and the docs' TypeScript examples type-checked against the SDK. The
//! README's test command installs node packages and builds the SDK first.

use alga_storage_tests::gateway::{AUDIENCE, KEY_ID, KEY_SECRET, TestGateway};
use alga_storage_tests::*;
use base64::Engine;

#[tokio::test]
async fn node_tests_pass_against_the_gateway() {
    let dir = iframe_sdk_dir();
    let db = TestDb::new().await;
    let service = db.service();
    service
        .register_schema(
            &granted("node-tenant", "install-typed"),
            "typed",
            r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}"#,
        )
        .await
        .unwrap();
    let gw = TestGateway::start(service, &[]).await;
    let output = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "test/client.test.mjs"])
        .current_dir(&dir)
        .env("ALGA_GATEWAY_URL", &gw.base)
        .env("ALGA_TOKEN_KEY_ID", KEY_ID)
        .env(
            "ALGA_TOKEN_KEY_SECRET",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(KEY_SECRET),
        )
        .env("ALGA_AUDIENCE", AUDIENCE)
        .env("ALGA_TYPED_INSTALL", "install-typed")
        .output()
        .await
        .expect("node runs (installed by scripts/test.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "node tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ℹ fail 0"), "{stdout}");
}

#[test]
fn the_docs_typescript_examples_type_check() {
    let output = std::process::Command::new("node")
        .arg("test/docs-examples.mjs")
        .current_dir(iframe_sdk_dir())
        .output()
        .expect("node runs (installed by scripts/test.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "docs examples do not type-check:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("examples type-check"), "{stdout}");
}
