//! The REST gateway over real HTTP on loopback: the conformance cases of the WIT contract
//! repeated through routes, one test per error status, tokens, CORS, request ids, OpenAPI, and
//! records crossing between the wasm and REST paths.

use std::sync::Arc;

use alga_storage::backend::postgres::PgBackend;
use alga_storage::http::MAX_BULK_BODY_BYTES;
use alga_storage::http::auth::TokenQuotas;
use alga_storage::http::openapi::{self, Operation};
use alga_storage::limits::{MAX_BULK_ITEMS, MAX_KEY_BYTES, MAX_METADATA_BYTES, MAX_VALUE_BYTES};
use alga_storage::{Limits, STORAGE_CAPABILITY, STORAGE_READ_CAPABILITY, StorageService};
use alga_storage_tests::gateway::{TestGateway, claims};
use alga_storage_tests::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// One caller of the gateway: a client and its token.
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// A response: status, headers, JSON body (`Null` when empty).
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn etag(&self) -> Option<&str> {
        self.headers.get("etag").and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    fn problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "errors are problem documents"
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"].as_str().unwrap().ends_with(code));
        &self.body
    }
}

impl Api {
    fn new(gateway: &TestGateway, token: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: gateway.base.clone(),
            token,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    fn record(ns: &str, key: &str) -> String {
        format!("/namespaces/{ns}/records/{}", percent_encode(key))
    }

    async fn get(&self, ns: &str, key: &str) -> Reply {
        self.send(Method::GET, &Self::record(ns, key), &[], None)
            .await
    }

    async fn put(&self, ns: &str, key: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
        self.send(
            Method::PUT,
            &Self::record(ns, key),
            headers,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    async fn delete(&self, ns: &str, key: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::DELETE, &Self::record(ns, key), headers, None)
            .await
    }

    async fn list(&self, ns: &str, query: &str) -> Reply {
        self.send(
            Method::GET,
            &format!("/namespaces/{ns}/records{query}"),
            &[],
            None,
        )
        .await
    }

    async fn bulk(&self, ns: &str, items: Value) -> Reply {
        let body = json!({ "items": items }).to_string().into_bytes();
        self.send(
            Method::POST,
            &format!("/namespaces/{ns}/bulk"),
            &[],
            Some(body),
        )
        .await
    }
}

async fn setup(engine: Engine) -> (TestStore, TestGateway) {
    let store = TestStore::new(engine).await;
    let gateway = TestGateway::start(store.service(), &[]).await;
    (store, gateway)
}

async fn revisions_map_to_etags_and_preconditions(engine: Engine) {
    let (_db, gw) = setup(engine).await;
    let api = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));

    let created = api
        .put("notes", "n1", json!({"value": {"t": 1}}), &[])
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.etag(), Some("\"1\""));
    assert_eq!(
        created.body,
        json!({"key": "n1", "revision": 1, "created": true})
    );

    let absent_only = api
        .put(
            "notes",
            "n1",
            json!({"value": 2}),
            &[("if-none-match", "*")],
        )
        .await;
    let problem = absent_only.problem(412, "revision-conflict");
    assert_eq!(problem["key"], "n1");
    assert_eq!(problem["currentRevision"], 1);

    let updated = api
        .put(
            "notes",
            "n1",
            json!({"value": {"t": 2}, "metadata": {"m": true}}),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(updated.etag(), Some("\"2\""));
    assert_eq!(updated.body["created"], false);

    let stale = api
        .put("notes", "n1", json!({"value": 3}), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(
        stale.problem(412, "revision-conflict")["currentRevision"],
        2
    );

    let read = api.get("notes", "n1").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.etag(), Some("\"2\""));
    assert_eq!(read.body["value"], json!({"t": 2}));
    assert_eq!(read.body["metadata"], json!({"m": true}));
    assert_eq!(read.body["revision"], 2);
    assert_eq!(read.body["schemaVersion"], Value::Null);

    // Reads are not conditional (a re-created key's revisions start again at 1): either
    // header is refused, not ignored.
    let n1 = Api::record("notes", "n1");
    for header in [("if-none-match", "\"2\""), ("if-match", "\"2\"")] {
        let reply = api.send(Method::GET, &n1, &[header], None).await;
        assert_eq!(
            reply.problem(400, "invalid-input")["field"],
            "precondition",
            "{header:?}"
        );
    }
    // Answers depend on the token, which no cache keys on: nothing is stored.
    for reply in [&read, &stale] {
        assert_eq!(reply.headers["cache-control"], "no-store");
    }
    assert_eq!(read.body["expiresAtMs"], Value::Null);
    assert!(
        read.body["createdAtMs"].as_u64().unwrap() <= read.body["updatedAtMs"].as_u64().unwrap()
    );

    let missing_at_rev = api
        .put(
            "notes",
            "nope",
            json!({"value": 1}),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(
        missing_at_rev.problem(412, "revision-conflict")["currentRevision"],
        Value::Null
    );

    let wrong_delete = api.delete("notes", "n1", &[("if-match", "\"1\"")]).await;
    assert_eq!(
        wrong_delete.problem(412, "revision-conflict")["currentRevision"],
        2
    );
    let deleted = api.delete("notes", "n1", &[("if-match", "\"2\"")]).await;
    assert_eq!(
        (deleted.status, deleted.body.clone()),
        (StatusCode::OK, json!({"deleted": true}))
    );
    let again = api.delete("notes", "n1", &[]).await;
    assert_eq!(
        again.body,
        json!({"deleted": false}),
        "deleting a missing key is not an error"
    );
    api.get("notes", "n1").await.problem(404, "not-found");

    // Recreated after delete: revision starts again at 1, created.
    let recreated = api
        .put(
            "notes",
            "n1",
            json!({"value": null}),
            &[("if-none-match", "*")],
        )
        .await;
    assert_eq!(
        (recreated.status, recreated.etag()),
        (StatusCode::CREATED, Some("\"1\""))
    );
    assert_eq!(api.get("notes", "n1").await.body["value"], Value::Null);
}

async fn keys_travel_percent_encoded_and_prefixes_are_literal(engine: Engine) {
    let (_db, gw) = setup(engine).await;
    let api = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));
    let keys = [
        "a%b",
        "a_b",
        "a\\b",
        "ab",
        "a%%",
        "a/b/c",
        "a b?c#d",
        "ünï/✓",
        "a+b",
        "a'; DROP TABLE x;--",
    ];
    for (i, key) in keys.iter().enumerate() {
        let reply = api.put("lit", key, json!({"value": i}), &[]).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{key}: {}", reply.body);
        assert_eq!(reply.body["key"], *key);
    }
    for (i, key) in keys.iter().enumerate() {
        let reply = api.get("lit", key).await;
        assert_eq!(
            (reply.body["key"].as_str(), reply.body["value"].as_u64()),
            (Some(*key), Some(i as u64))
        );
    }
    let page = api
        .list("lit", &format!("?prefix={}", percent_encode("a%")))
        .await;
    let listed: Vec<&str> = page.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["a%%", "a%b"],
        "% is data, not a wildcard; byte order"
    );
    let page = api
        .list("lit", &format!("?prefix={}", percent_encode("a_")))
        .await;
    assert_eq!(page.body["entries"].as_array().unwrap().len(), 1);
    let page = api
        .list("lit", &format!("?prefix={}", percent_encode("a\\")))
        .await;
    assert_eq!(page.body["entries"][0]["key"], "a\\b");
}

async fn list_pages_with_cursors_and_keys_only(engine: Engine) {
    let (_db, gw) = setup(engine).await;
    let api = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));
    let items: Vec<Value> = (0..100)
        .map(|i| json!({"key": format!("k{i:03}"), "value": {"i": i}}))
        .collect();
    assert_eq!(
        api.bulk("pages", Value::Array(items.clone())).await.status,
        StatusCode::OK
    );
    let more: Vec<Value> = (100..250)
        .map(|i| json!({"key": format!("k{i:03}"), "value": {"i": i}}))
        .collect();
    api.bulk("pages", Value::Array(more[..100].to_vec())).await;
    api.bulk("pages", Value::Array(more[100..].to_vec())).await;
    api.put("other", "k000", json!({"value": 1}), &[]).await;

    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=100&cursor={}", percent_encode(c)),
            None => "?limit=100".into(),
        };
        let page = api.list("pages", &query).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let entries = page.body["entries"].as_array().unwrap();
        sizes.push(entries.len());
        for entry in entries {
            assert_eq!(entry["value"]["i"].as_u64().unwrap(), keys.len() as u64);
            keys.push(entry["key"].as_str().unwrap().to_owned());
        }
        match page.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(sizes, [100, 100, 50]);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);

    let keys_only = api.list("pages", "?limit=2&keysOnly=true").await;
    let first = &keys_only.body["entries"][0];
    assert_eq!(
        (first["key"].as_str(), first["revision"].as_u64()),
        (Some("k000"), Some(1))
    );
    assert!(
        first.get("value").is_none() && first.get("metadata").is_none(),
        "keys-only omits values and metadata: {first}"
    );

    // A cursor is bound to its namespace and prefix.
    let page = api.list("pages", "?limit=1").await;
    let cursor = page.body["nextCursor"].as_str().unwrap().to_owned();
    api.list("other", &format!("?cursor={}", percent_encode(&cursor)))
        .await
        .problem(400, "invalid-input");
    api.list(
        "pages",
        &format!("?prefix=k1&cursor={}", percent_encode(&cursor)),
    )
    .await
    .problem(400, "invalid-input");
    api.list("pages", "?cursor=forged")
        .await
        .problem(400, "invalid-input");
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=-1",
        "?limit=x",
        "?keysOnly=maybe",
        "?sort=desc",
    ] {
        api.list("pages", bad).await.problem(400, "invalid-input");
    }
    let empty = api.list("nothing-here", "").await;
    assert_eq!(empty.body, json!({"entries": [], "nextCursor": null}));
}

async fn bulk_put_is_atomic_and_names_the_failing_item(engine: Engine) {
    let (_db, gw) = setup(engine).await;
    let api = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));
    api.put("bulk", "existing", json!({"value": 0}), &[]).await;

    let failing = api
        .bulk(
            "bulk",
            json!([
                {"key": "new-1", "value": 1},
                {"key": "new-2", "value": 2, "ifAbsent": true},
                {"key": "existing", "value": 3, "ifAbsent": true},
                {"key": "new-3", "value": 4}
            ]),
        )
        .await;
    let problem = failing.problem(409, "revision-conflict");
    assert_eq!(
        (problem["item"].as_u64(), problem["key"].as_str()),
        (Some(2), Some("existing"))
    );
    for key in ["new-1", "new-2", "new-3"] {
        api.get("bulk", key).await.problem(404, "not-found");
    }

    let invalid = api
        .bulk(
            "bulk",
            json!([{"key": "ok", "value": 1}, {"key": "", "value": 2}]),
        )
        .await;
    assert_eq!(invalid.problem(400, "invalid-input")["item"], 1);
    let both = api
        .bulk(
            "bulk",
            json!([{"key": "x", "value": 1, "ifAbsent": true, "ifRevision": 1}]),
        )
        .await;
    assert_eq!(both.problem(400, "invalid-input")["item"], 0);
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    api.bulk("bulk", Value::Array(too_many))
        .await
        .problem(400, "invalid-input");

    let ok = api
        .bulk(
            "bulk",
            json!([
                {"key": "existing", "value": 5, "ifRevision": 1},
                {"key": "fresh", "value": 6, "ifAbsent": true, "ttlMs": 60000, "metadata": {"b": 1}}
            ]),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(
        ok.body["results"],
        json!([
            {"key": "existing", "revision": 2, "created": false},
            {"key": "fresh", "revision": 1, "created": true}
        ])
    );
    let fresh = api.get("bulk", "fresh").await;
    assert!(fresh.body["expiresAtMs"].as_u64().is_some());
    assert_eq!(fresh.body["metadata"], json!({"b": 1}));
}

/// The largest bulk the contract allows (100 items, each at the longest key and the largest
/// value and metadata) fits the bulk route's body limit; a body past the limit is refused whole.
async fn bulk_bodies_of_the_largest_writes_are_read(engine: Engine) {
    let (_db, gw) = setup(engine).await;
    let api = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));
    let value = "v".repeat(MAX_VALUE_BYTES - 2);
    let metadata = json!({ "m": "m".repeat(MAX_METADATA_BYTES - 8) });
    assert_eq!(metadata.to_string().len(), MAX_METADATA_BYTES);
    let items: Vec<Value> = (0..MAX_BULK_ITEMS)
        .map(|i| {
            let key = format!("{i:03}{}", "k".repeat(MAX_KEY_BYTES - 3));
            json!({ "key": key, "value": value, "metadata": metadata })
        })
        .collect();
    let largest = api.bulk("big", Value::Array(items)).await;
    assert_eq!(largest.status, StatusCode::OK, "{}", largest.body);
    assert_eq!(
        largest.body["results"].as_array().unwrap().len(),
        MAX_BULK_ITEMS
    );
    let last = format!("099{}", "k".repeat(MAX_KEY_BYTES - 3));
    let read = api.get("big", &last).await;
    assert_eq!(read.body["value"].as_str().map(str::len), Some(value.len()));

    let mut over = br#"{"items":[{"key":"a","value":""#.to_vec();
    over.resize(MAX_BULK_BODY_BYTES, b'x');
    over.extend_from_slice(br#""}]}"#);
    api.send(Method::POST, "/namespaces/big/bulk", &[], Some(over))
        .await
        .problem(413, "invalid-input");
    api.get("big", "a").await.problem(404, "not-found");
    let usage = api.send(Method::GET, "/usage", &[], None).await;
    assert_eq!(usage.body["perNamespace"][0]["keys"]["used"], 100);
}

/// A token may carry the install's quotas (the platform's plan): the gateway enforces those,
/// and a token without them gets the gateway's defaults.
async fn quotas_come_from_the_token(engine: Engine) {
    let (store, gw) = setup(engine).await;
    let mut quota_claims = claims("tenant-a", "install-q", &[STORAGE_CAPABILITY]);
    quota_claims.quotas = Some(TokenQuotas {
        namespaces: 1,
        keys_per_namespace: 2,
        total_bytes: 1_000_000,
    });
    let planned = Api::new(&gw, Some(gw.mint(&quota_claims)));
    for key in ["a", "b"] {
        let reply = planned.put("ns", key, json!({"value": 1}), &[]).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let keys = planned.put("ns", "c", json!({"value": 1}), &[]).await;
    let problem = keys.problem(429, "quota-exceeded");
    assert_eq!(
        (&problem["quota"], &problem["limit"], &problem["usage"]),
        (&json!("keys-per-namespace"), &json!(2), &json!(2))
    );
    let namespaces = planned.put("other", "a", json!({"value": 1}), &[]).await;
    assert_eq!(
        namespaces.problem(429, "quota-exceeded")["quota"],
        "namespaces"
    );
    let usage = planned.send(Method::GET, "/usage", &[], None).await.body;
    assert_eq!(
        (
            &usage["namespaces"]["limit"],
            &usage["totalBytes"]["limit"],
            &usage["perNamespace"][0]["keys"]["limit"]
        ),
        (&json!(1), &json!(1_000_000), &json!(2))
    );

    let defaults = Api::new(&gw, Some(gw.token("tenant-a", "install-q")));
    let reply = defaults.put("ns", "c", json!({"value": 1}), &[]).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    // Above the defaults: capped by the service's maximums (here the defaults), and taken as
    // they are by a service that allows more, as `alga-storage serve` does.
    quota_claims.quotas = Some(TokenQuotas {
        namespaces: 1_000,
        keys_per_namespace: 1_000_000,
        total_bytes: 1 << 30,
    });
    let total_limit = |gateway: &TestGateway| {
        let api = Api::new(gateway, Some(gateway.mint(&quota_claims)));
        async move {
            api.send(Method::GET, "/usage", &[], None).await.body["totalBytes"]["limit"].clone()
        }
    };
    assert_eq!(
        total_limit(&gw).await,
        json!(Limits::DEFAULT.max_total_bytes)
    );
    let generous = store
        .service()
        .with_limits(Limits::DEFAULT, Limits::CONTRACT);
    let generous = TestGateway::start(generous, &[]).await;
    assert_eq!(total_limit(&generous).await, json!(1u64 << 30));
}

async fn tenants_and_installs_are_isolated_by_the_token(engine: Engine) {
    let (_db, gw) = setup(engine).await;
    let a = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));
    let b = Api::new(&gw, Some(gw.token("tenant-b", "install-1")));
    let a2 = Api::new(&gw, Some(gw.token("tenant-a", "install-2")));
    a.put("shared", "secret", json!({"value": "a's"}), &[])
        .await;

    for other in [&b, &a2] {
        other
            .get("shared", "secret")
            .await
            .problem(404, "not-found");
        assert_eq!(other.list("shared", "").await.body["entries"], json!([]));
        let usage = other.send(Method::GET, "/usage", &[], None).await;
        assert_eq!(usage.body["totalBytes"]["used"], 0);
        // Writing the same address creates the other install's own record.
        let own = other
            .put(
                "shared",
                "secret",
                json!({"value": "mine"}),
                &[("if-none-match", "*")],
            )
            .await;
        assert_eq!(own.status, StatusCode::CREATED);
    }
    assert_eq!(a.get("shared", "secret").await.body["value"], "a's");
    // Query parameters cannot name a tenant or install.
    a.list("shared", "?tenant=tenant-b")
        .await
        .problem(400, "invalid-input");
}

async fn tokens_are_verified(engine: Engine) {
    let (_db, gw) = setup(engine).await;
    let good = claims("tenant-a", "install-1", &[STORAGE_CAPABILITY]);
    let ok = Api::new(&gw, Some(gw.mint(&good)));
    assert_eq!(
        ok.put("t", "k", json!({"value": 1}), &[]).await.status,
        StatusCode::CREATED
    );
    // The scheme is case-insensitive; the token is not.
    let anonymous = Api::new(&gw, None);
    let token = gw.mint(&good);
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let credentials = format!("{scheme} {token}");
        let path = Api::record("t", "k");
        let reply = anonymous
            .send(Method::GET, &path, &[("authorization", &credentials)], None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}");
    }
    let credentials = format!("Bearer {}", token.to_uppercase());
    anonymous
        .send(
            Method::GET,
            &Api::record("t", "k"),
            &[("authorization", &credentials)],
            None,
        )
        .await
        .problem(401, "unauthenticated");
    anonymous
        .send(
            Method::GET,
            &Api::record("t", "k"),
            &[("authorization", &format!("Basic {token}"))],
            None,
        )
        .await
        .problem(401, "unauthenticated");

    let mut expired = good.clone();
    expired.iat -= 600;
    expired.exp -= 600;
    let mut wrong_audience = good.clone();
    wrong_audience.aud = "another-service".into();
    let mut too_long = good.clone();
    too_long.exp = too_long.iat + 7 * 24 * 3600;
    let other_key = alga_storage::http::auth::TokenKey::new("test-key-1", vec![9u8; 32]).unwrap();
    let token = gw.mint(&good);
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut other_tenant = good.clone();
    other_tenant.tenant = "tenant-b".into();
    use base64::Engine;
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&other_tenant).unwrap());
    let forged = format!("{head}.{forged_payload}.{signature}");

    for (what, token) in [
        ("missing", None),
        ("garbage", Some("not-a-token".to_owned())),
        ("expired", Some(gw.mint(&expired))),
        ("wrong audience", Some(gw.mint(&wrong_audience))),
        ("lifetime too long", Some(gw.mint(&too_long))),
        ("unknown key", Some(other_key.mint(&good))),
        ("forged claims", Some(forged)),
    ] {
        let api = Api::new(&gw, token);
        let reply = api.get("t", "k").await;
        reply.problem(401, "unauthenticated");
        assert!(reply.headers.contains_key("www-authenticate"), "{what}");
        api.put("t", "k", json!({"value": 2}), &[])
            .await
            .problem(401, "unauthenticated");
    }
    assert_eq!(
        ok.get("t", "k").await.body["revision"],
        1,
        "refused writes changed nothing"
    );
}

async fn capabilities_decide_reads_and_writes(engine: Engine) {
    let (_db, gw) = setup(engine).await;
    let writer = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));
    writer.put("caps", "k", json!({"value": 1}), &[]).await;

    let reader = Api::new(
        &gw,
        Some(gw.mint(&claims("tenant-a", "install-1", &[STORAGE_READ_CAPABILITY]))),
    );
    assert_eq!(reader.get("caps", "k").await.body["value"], 1);
    assert_eq!(
        reader.list("caps", "").await.body["entries"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        reader.send(Method::GET, "/usage", &[], None).await.status,
        StatusCode::OK
    );
    reader
        .put("caps", "k", json!({"value": 2}), &[])
        .await
        .problem(403, "capability-denied");
    reader
        .delete("caps", "k", &[])
        .await
        .problem(403, "capability-denied");
    reader
        .bulk("caps", json!([{"key": "b", "value": 1}]))
        .await
        .problem(403, "capability-denied");

    let none = Api::new(
        &gw,
        Some(gw.mint(&claims("tenant-a", "install-1", &["other.cap"]))),
    );
    none.get("caps", "k")
        .await
        .problem(403, "capability-denied");
    none.put("caps", "k", json!({"value": 3}), &[])
        .await
        .problem(403, "capability-denied");
    assert_eq!(
        writer.get("caps", "k").await.body["revision"],
        1,
        "data kept"
    );
}

async fn invalid_input_is_refused_with_the_field_named(engine: Engine) {
    let (_db, gw) = setup(engine).await;
    let api = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));
    let cases: Vec<(Reply, &str)> = vec![
        (
            api.put("Bad!", "k", json!({"value": 1}), &[]).await,
            "namespace",
        ),
        (
            api.put("ns", &"k".repeat(513), json!({"value": 1}), &[])
                .await,
            "key",
        ),
        (
            api.put("ns", "tab\tkey", json!({"value": 1}), &[]).await,
            "key",
        ),
        (
            api.put("ns", "k", json!({"metadata": 1}), &[]).await,
            "body",
        ),
        (
            api.put("ns", "k", json!({"value": 1, "extra": 2}), &[])
                .await,
            "body",
        ),
        (
            api.put("ns", "k", json!({"value": 1, "ttlMs": 0}), &[])
                .await,
            "ttlMs",
        ),
        (
            api.put(
                "ns",
                "k",
                json!({"value": 1}),
                &[("if-match", "\"1\""), ("if-match", "\"2\"")],
            )
            .await,
            "precondition",
        ),
        (
            api.put("ns", "k", json!({"value": 1}), &[("if-match", "\"01\"")])
                .await,
            "precondition",
        ),
        (
            // A guard on a bulk would be ignored: refused instead.
            api.send(
                Method::POST,
                "/namespaces/ns/bulk",
                &[("if-none-match", "*")],
                Some(
                    json!({"items": [{"key": "k", "value": 1}]})
                        .to_string()
                        .into_bytes(),
                ),
            )
            .await,
            "precondition",
        ),
        (
            api.send(
                Method::GET,
                "/namespaces/ns/records",
                &[("if-match", "\"1\"")],
                None,
            )
            .await,
            "precondition",
        ),
        (
            api.send(
                Method::GET,
                "/namespaces/ns/records/k",
                &[("if-none-match", "1")],
                None,
            )
            .await,
            "precondition",
        ),
        (
            api.put("ns", "k", json!({"value": 1}), &[("if-match", "3")])
                .await,
            "precondition",
        ),
        (
            api.put(
                "ns",
                "k",
                json!({"value": 1}),
                &[("if-match", "\"1\""), ("if-none-match", "*")],
            )
            .await,
            "precondition",
        ),
        (
            api.send(
                Method::PUT,
                "/namespaces/ns/records/k",
                &[],
                Some(b"{not json".to_vec()),
            )
            .await,
            "body",
        ),
        (
            api.send(
                Method::PUT,
                "/namespaces/ns/records/k",
                &[],
                Some(vec![0xff, 0xfe]),
            )
            .await,
            "body",
        ),
        (
            api.put("ns", "k", json!({"value": deep(33)}), &[]).await,
            "value",
        ),
        (
            api.put(
                "ns",
                "k",
                json!({"value": 1, "metadata": "m".repeat(5000)}),
                &[],
            )
            .await,
            "metadata",
        ),
        (
            api.send(Method::GET, "/namespaces/ns/records/%FF", &[], None)
                .await,
            "path",
        ),
    ];
    for (i, (reply, field)) in cases.iter().enumerate() {
        let problem = reply.problem(400, "invalid-input");
        assert_eq!(problem["field"], *field, "case {i}: {problem}");
    }
    assert_eq!(
        api.list("ns", "").await.body["entries"],
        json!([]),
        "nothing was written"
    );
    assert_eq!(
        api.put("ns", "k", json!({"value": deep(32)}), &[])
            .await
            .status,
        StatusCode::CREATED
    );
}

fn deep(depth: usize) -> Value {
    (1..depth).fold(json!([]), |inner, _| json!([inner]))
}

#[tokio::test]
async fn every_error_status() {
    let db = TestDb::new().await;
    let small = Limits {
        max_keys_per_namespace: 2,
        ..Limits::DEFAULT
    };
    let service = db.service().with_limits(small, small);
    let ctx = granted("tenant-a", "install-1");
    service
        .register_schema(
            &ctx,
            "typed",
            r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}"#,
        )
        .await
        .unwrap();
    let gw = TestGateway::start(service, &[]).await;
    let api = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));

    // 400, 401, 403 are covered above; one each here too so this test lists them all.
    api.put("BAD", "k", json!({"value": 1}), &[])
        .await
        .problem(400, "invalid-input");
    Api::new(&gw, None)
        .get("ns", "k")
        .await
        .problem(401, "unauthenticated");
    Api::new(&gw, Some(gw.mint(&claims("tenant-a", "install-1", &[]))))
        .get("ns", "k")
        .await
        .problem(403, "capability-denied");
    api.get("ns", "missing").await.problem(404, "not-found");
    let not_found = api.send(Method::GET, "/no/such/route", &[], None).await;
    not_found.problem(404, "no-route");
    api.send(Method::GET, "/namespaces/ns/records/", &[], None)
        .await
        .problem(404, "no-route");
    api.send(Method::GET, "/namespaces/typed/schema", &[], None)
        .await;
    api.send(Method::GET, "/namespaces/untyped/schema", &[], None)
        .await
        .problem(404, "not-found");
    let not_allowed = api
        .send(Method::PATCH, "/namespaces/ns/records/k", &[], None)
        .await;
    not_allowed.problem(405, "no-route");
    // The router's own answers under the API carry what every API answer does.
    for reply in [&not_found, &not_allowed] {
        assert_eq!(reply.headers["cache-control"], "no-store");
        assert_eq!(reply.headers["x-request-id"].len(), 36, "a UUID");
    }

    let mismatch = api
        .put(
            "typed",
            "k",
            json!({"value": {"n": 1}, "schemaVersion": 7}),
            &[],
        )
        .await;
    let problem = mismatch.problem(409, "schema-mismatch");
    assert_eq!(
        (problem["expected"].as_u64(), problem["current"].as_u64()),
        (Some(7), Some(1))
    );
    api.put("ns", "k", json!({"value": 1}), &[]).await;
    api.put("ns", "k", json!({"value": 2}), &[("if-match", "\"9\"")])
        .await
        .problem(412, "revision-conflict");

    let huge = format!(r#"{{"value":"{}"}}"#, "x".repeat(400 * 1024));
    api.send(
        Method::PUT,
        "/namespaces/ns/records/big",
        &[],
        Some(huge.into_bytes()),
    )
    .await
    .problem(413, "invalid-input");

    let invalid = api
        .put("typed", "k", json!({"value": {"n": "one"}}), &[])
        .await;
    let violations = invalid.problem(422, "validation-failed")["violations"].clone();
    assert_eq!(violations[0]["instancePath"], "/n");
    assert_eq!(violations[0]["keyword"], "type");

    api.put("ns", "k2", json!({"value": 1}), &[]).await;
    let quota = api.put("ns", "k3", json!({"value": 1}), &[]).await;
    let problem = quota.problem(429, "quota-exceeded");
    assert_eq!(
        (
            problem["quota"].as_str(),
            problem["limit"].as_u64(),
            problem["usage"].as_u64()
        ),
        (Some("keys-per-namespace"), Some(2), Some(2))
    );

    // 503: a gateway whose database is unreachable; retryable, with Retry-After.
    let unreachable = PgBackend::connect("postgres://postgres@127.0.0.1:1/none", 1).unwrap();
    let down = TestGateway::start(StorageService::new(Arc::new(unreachable)), &[]).await;
    let reply = Api::new(&down, Some(down.token("tenant-a", "install-1")))
        .get("ns", "k")
        .await;
    reply.problem(503, "unavailable");
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(
        !reply.body["detail"].as_str().unwrap().contains("127.0.0.1"),
        "no internals leak"
    );
}

#[tokio::test]
async fn cors_allows_only_configured_origins_and_request_ids_are_echoed() {
    let db = TestDb::new().await;
    let gw = TestGateway::start(db.service(), &["https://app.example.com"]).await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(Method::OPTIONS, gw.url("/namespaces/ns/records/k"))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header(
                "access-control-request-headers",
                "authorization,if-match,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        methods.contains("PUT") && methods.contains("DELETE"),
        "{methods}"
    );
    let denied = preflight("https://evil.example").await.unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // Answers differ by origin (and a preflight by what it asks): caches must key on them.
    for reply in [&allowed, &denied] {
        let vary = reply.headers()["vary"].to_str().unwrap().to_owned();
        for name in [
            "origin",
            "access-control-request-method",
            "access-control-request-headers",
        ] {
            assert!(vary.contains(name), "{name} not in {vary}");
        }
    }
    // What a page's script may read of an answer: the iframe SDK reads `Date` to keep a
    // record's expiry across `update`, `ETag` for revisions, `Retry-After` for backoff.
    let answer = http
        .get(gw.url("/usage"))
        .header("origin", "https://app.example.com")
        .bearer_auth(gw.token("tenant-a", "install-1"))
        .send()
        .await
        .unwrap();
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["date", "etag", "retry-after", "x-request-id"] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    assert!(answer.headers().contains_key("date"));
    assert_eq!(answer.headers().get_all("vary").iter().count(), 1);
    assert!(
        answer.headers()["vary"]
            .to_str()
            .unwrap()
            .contains("origin")
    );
    // Outside the API nothing depends on a token: no `no-store` there.
    let health = http
        .get(format!("http://{}/healthz", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(!health.headers().contains_key("cache-control"));
    assert!(health.headers().contains_key("x-request-id"));

    let api = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));
    let reply = api
        .send(Method::GET, "/usage", &[("x-request-id", "req-42")], None)
        .await;
    assert_eq!(reply.headers["x-request-id"], "req-42");
    let generated = api.send(Method::GET, "/usage", &[], None).await;
    assert_eq!(generated.headers["x-request-id"].len(), 36, "a UUID");
    let failed = Api::new(&gw, None)
        .send(Method::GET, "/usage", &[("x-request-id", "req-43")], None)
        .await;
    assert_eq!(failed.headers["x-request-id"], "req-43", "also on errors");

    // The request id reaches the audit row of a write.
    api.put(
        "ns",
        "k",
        json!({"value": 1}),
        &[("x-request-id", "req-audit-1")],
    )
    .await;
    let row = db
        .client()
        .await
        .query_one(
            "SELECT request_id, actor FROM ext_storage_audit WHERE key = 'k'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("req-audit-1")
    );
    assert_eq!(row.get::<_, String>(1), "user-1");
}

async fn openapi_documents_exactly_the_served_routes(engine: Engine) {
    let (_db, gw) = setup(engine).await;
    let anonymous = Api::new(&gw, None);
    let served = anonymous
        .send(Method::GET, "/openapi.json", &[], None)
        .await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.body, openapi::document());
    assert_eq!(served.body["openapi"], "3.1.0");

    let paths = served.body["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut expected: Vec<(String, String)> = Operation::ALL
        .iter()
        .map(|op| {
            (
                op.method().to_owned(),
                format!("/api/ext-storage/v1{}", op.path()),
            )
        })
        .collect();
    documented.sort();
    expected.sort();
    assert_eq!(documented, expected, "every route is documented, once");

    // Every documented route exists: without a token it answers 401 (or 200 for the document),
    // never the router's 404 / 405.
    for (method, path) in &documented {
        let concrete = path
            .trim_start_matches("/api/ext-storage/v1")
            .replace("{namespace}", "ns")
            .replace("{key}", "k");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body = (method == Method::PUT || method == Method::POST).then(|| b"{}".to_vec());
        let reply = anonymous.send(method.clone(), &concrete, &[], body).await;
        assert!(
            matches!(reply.status.as_u16(), 200 | 401),
            "{method} {concrete}: {} {}",
            reply.status,
            reply.body
        );
    }
    for op in Operation::ALL {
        let id = openapi::operation_id(op);
        let item = &served.body["paths"][format!("/api/ext-storage/v1{}", op.path())][op.method()];
        assert_eq!(item["operationId"], id);
    }
}

async fn records_cross_between_wasm_and_rest(engine: Engine) {
    let (store, gw) = setup(engine).await;
    let api = Api::new(&gw, Some(gw.token("tenant-a", "install-1")));
    let value = json!({"text": "héllo ✓", "n": [1, 2.5, null], "deep": {"a": {"b": true}}});
    let metadata = json!({"by": "wasm"});
    let (value_text, metadata_text) = (value.to_string(), metadata.to_string());
    let env = |mode: &'static str, key: &'static str| {
        vec![
            ("ALGA_MODE", mode),
            ("ALGA_KEY", key),
            ("ALGA_VALUE", value_text.as_str()),
            ("ALGA_METADATA", metadata_text.as_str()),
        ]
    };
    // The token's install is the one the component runs as.
    let ctx = granted("tenant-a", "install-1");
    let outcome = run_fixture_as(
        store.service(),
        STORE_INTEROP,
        ctx.clone(),
        &env("write", "from/wasm"),
    )
    .await;
    assert_success("store_interop write", &outcome);
    let read = api.get("interop", "from/wasm").await;
    assert_eq!(
        (read.body["value"].clone(), read.body["metadata"].clone()),
        (value.clone(), metadata.clone())
    );
    assert_eq!(read.etag(), Some("\"1\""));

    let written = api
        .put(
            "interop",
            "from-rest",
            json!({"value": value, "metadata": metadata}),
            &[],
        )
        .await;
    assert_eq!(written.status, StatusCode::CREATED);
    let outcome = run_fixture_as(
        store.service(),
        STORE_INTEROP,
        ctx,
        &env("read", "from-rest"),
    )
    .await;
    assert_success("store_interop read", &outcome);
    assert_eq!(outcome.stdout.trim(), "revision 1");
}

/// 32 HTTP clients race 320 creates against a 100-key quota (the gateway's limits): exactly
/// 100 are stored and every other request is a 429 naming the quota.
async fn quota_race_through_rest(engine: Engine) {
    let store = TestStore::new(engine).await;
    let limits = Limits {
        max_keys_per_namespace: 100,
        ..Limits::DEFAULT
    };
    let gw = TestGateway::start(store.service().with_limits(limits, limits), &[]).await;
    let token = gw.token("tenant-q", "install-q");
    let mut tasks = Vec::new();
    for w in 0..32 {
        let (url, token) = (gw.base.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut statuses = Vec::new();
            for i in 0..10 {
                let response = http
                    .put(format!("{url}/namespaces/ns/records/w{w:02}-{i:02}"))
                    .bearer_auth(&token)
                    .json(&json!({"value": 1}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                if status == 429 {
                    assert_eq!(
                        (
                            body["quota"].as_str(),
                            body["limit"].as_u64(),
                            body["usage"].as_u64()
                        ),
                        (Some("keys-per-namespace"), Some(100), Some(100))
                    );
                }
                statuses.push(status);
            }
            statuses
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for task in tasks {
        for status in task.await.unwrap() {
            match status {
                201 => created += 1,
                429 => refused += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    assert_eq!((created, refused), (100, 220));
    let api = Api::new(&gw, Some(token));
    let usage = api.send(Method::GET, "/usage", &[], None).await;
    assert_eq!(usage.body["perNamespace"][0]["keys"]["used"], 100);
}

on_both_engines!(
    quota_race_through_rest,
    revisions_map_to_etags_and_preconditions,
    keys_travel_percent_encoded_and_prefixes_are_literal,
    list_pages_with_cursors_and_keys_only,
    bulk_put_is_atomic_and_names_the_failing_item,
    bulk_bodies_of_the_largest_writes_are_read,
    quotas_come_from_the_token,
    tenants_and_installs_are_isolated_by_the_token,
    tokens_are_verified,
    capabilities_decide_reads_and_writes,
    invalid_input_is_refused_with_the_field_named,
    openapi_documents_exactly_the_served_routes,
    records_cross_between_wasm_and_rest,
);
