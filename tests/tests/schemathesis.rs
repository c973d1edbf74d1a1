//! schemathesis (PyPI) against the OpenAPI document the gateway serves: a bounded number of
//! generated requests per operation (fixed seed), zero server errors, and responses that
//! conform to the document (status codes, content types, schemas, headers).

use std::path::Path;

use alga_storage_tests::gateway::TestGateway;
use alga_storage_tests::*;

#[tokio::test]
async fn generated_requests_cause_no_server_error_and_conform_to_the_document() {
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis-venv/bin/st");
    assert!(
        st.exists(),
        "schemathesis is not installed: run scripts/test.sh (scripts/install-test-deps.sh)"
    );
    for engine in ENGINES {
        let store = TestStore::new(engine).await;
        let gw = TestGateway::start(store.service(), &[]).await;
        let token = gw.token("tenant-st", "install-st");
        let output = tokio::process::Command::new(&st)
            .args(["run", &gw.url("/openapi.json")])
            .args(["--url", &format!("http://{}", gw.addr)])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--max-examples", "25", "--seed", "20261130", "--no-color"])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_schema_conformance,response_headers_conformance",
            ])
            .output()
            .await
            .expect("schemathesis runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "schemathesis found failures on {engine:?}:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("passed"), "{stdout}");
        println!(
            "{engine:?}: {}",
            stdout
                .lines()
                .filter(|l| l.contains("generated"))
                .collect::<String>()
        );
    }
}
