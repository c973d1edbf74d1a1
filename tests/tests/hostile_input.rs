//! Hostile input corpora as keys, namespaces, prefixes and values, on both engines and through
//! the REST gateway: stored and listed literally (no normalisation, no pattern matching), or
//! refused with `invalid-input` — never interpreted.

use alga_storage::StorageError;
use alga_storage::model::{ListOptions, PutOptions};
use alga_storage_tests::gateway::TestGateway;
use alga_storage_tests::*;

/// Keys that must be stored exactly as given, each distinct from every other.
const LITERAL_KEYS: &[&str] = &[
    "' OR '1'='1",
    "'; DROP TABLE ext_storage_records; --",
    "\"; SELECT pg_sleep(10); --",
    ") OR 1=1 --",
    "$1",
    "%' --",
    "%",
    "_",
    "\\",
    "\\x00",
    "caf\u{e9}",                    // NFC é
    "cafe\u{301}",                  // NFD e + combining acute: a different key
    "\u{202e}txt.exe",              // right-to-left override
    "a\u{200b}b",                   // zero-width space
    "ab",                           // …distinct from the zero-width one
    "\u{feff}bom",                  // byte order mark
    "\u{5e9}\u{5dc}\u{5d5}\u{5dd}", // Hebrew (RTL)
    "🦀/../..",
];

/// Keys that must be refused: control characters, NUL included.
const REFUSED_KEYS: &[&str] = &[
    "a\0b",
    "\0",
    "line\nbreak",
    "tab\t",
    "del\u{7f}",
    "\u{1b}[31m",
    "",
];

/// Namespaces outside `[a-z0-9][a-z0-9._-]{0,62}`.
const REFUSED_NAMESPACES: &[&str] = &[
    "' OR 1=1 --",
    "ns; DROP TABLE x",
    "caf\u{e9}",
    "NS",
    "ns\0",
    "../etc",
    "",
    "-leading",
];

async fn corpus_on(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("tenant-h", "install-h");
    for (i, key) in LITERAL_KEYS.iter().enumerate() {
        let value = format!("{{\"i\":{i}}}");
        service
            .put(&call, "corpus", key, &value, &PutOptions::default())
            .await
            .unwrap();
    }
    for (i, key) in LITERAL_KEYS.iter().enumerate() {
        let record = service.get(&call, "corpus", key).await.unwrap().expect(key);
        assert_eq!(record.key, *key);
        let value: serde_json::Value = serde_json::from_str(&record.value.unwrap()).unwrap();
        assert_eq!(value["i"], i, "{key:?} read another key's record");
        // As a prefix, each matches itself and only keys that really start with it.
        let page = service
            .list(
                &call,
                "corpus",
                &ListOptions {
                    prefix: Some(key.to_string()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let expected: Vec<&str> = {
            let mut k: Vec<&str> = LITERAL_KEYS
                .iter()
                .copied()
                .filter(|k| k.starts_with(key))
                .collect();
            k.sort();
            k
        };
        let listed: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(listed, expected, "prefix {key:?}");
    }
    let all = service
        .list(
            &call,
            "corpus",
            &ListOptions {
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.entries.len(),
        LITERAL_KEYS.len(),
        "every key distinct, none normalised"
    );

    for key in REFUSED_KEYS {
        let result = service
            .put(&call, "corpus", key, "1", &PutOptions::default())
            .await;
        assert!(
            matches!(
                &result,
                Err(StorageError::InvalidInput { field: "key", .. })
            ),
            "{key:?}: {result:?}"
        );
        let prefix = ListOptions {
            prefix: Some(key.to_string()),
            ..Default::default()
        };
        if !key.is_empty() {
            assert!(
                service.list(&call, "corpus", &prefix).await.is_err(),
                "prefix {key:?}"
            );
        }
    }
    for namespace in REFUSED_NAMESPACES {
        let result = service
            .put(&call, namespace, "k", "1", &PutOptions::default())
            .await;
        assert!(
            matches!(
                &result,
                Err(StorageError::InvalidInput {
                    field: "namespace",
                    ..
                })
            ),
            "{namespace:?}: {result:?}"
        );
    }
    for value in [
        r#""nul \u0000""#,
        r#"{"\u0000":1}"#,
        "{\"a\":1",
        "NaN",
        "[1,]",
        "\u{0}",
        // Lone UTF-16 surrogates in escapes: no character, and jsonb refuses them.
        r#""\udddd""#,
        r#""\ud83d""#,
        r#"{"k\ud83d":1}"#,
        r#""\ud83d\u0041""#,
        // Numbers beyond a double: PostgreSQL would write out 131,072 digits on every read.
        "1e131072",
        "[1e400,2]",
        "-1e309",
        "1e-400",
        &"9".repeat(400),
        // More fraction digits than `numeric` holds (PostgreSQL answered 22003, a 500).
        &format!("1.{}", "0".repeat(16_384)),
        // 7 KB of text that PostgreSQL would return as 310 KB.
        &format!("[{}]", vec!["0e-308"; 1000].join(",")),
    ] {
        let result = service
            .put(&call, "corpus", "v", value, &PutOptions::default())
            .await;
        assert!(
            matches!(
                &result,
                Err(StorageError::InvalidInput { field: "value", .. })
            ),
            "{value:?}: {result:?}"
        );
    }
    // The longest keys made of characters JSON escapes page through cursors like any others.
    let quotes = "\"".repeat(510);
    for i in 1..=3 {
        let key = format!("{quotes}{i}");
        service
            .put(&call, "escaped", &key, "1", &PutOptions::default())
            .await
            .unwrap();
    }
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let options = ListOptions {
            prefix: Some(quotes.clone()),
            cursor,
            limit: Some(1),
            ..Default::default()
        };
        let page = service.list(&call, "escaped", &options).await.unwrap();
        paged.extend(page.entries.into_iter().map(|e| e.key));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(paged, ["1", "2", "3"].map(|i| format!("{quotes}{i}")));

    // The edges of a double's range are stored, and read back as the same numbers (an engine
    // may write them out in full).
    let edges = "[1e308,-1.7976931348623157e308,1e-308,4.9e-308]";
    service
        .put(&call, "numbers", "edges", edges, &PutOptions::default())
        .await
        .unwrap();
    let stored = service
        .get(&call, "numbers", "edges")
        .await
        .unwrap()
        .unwrap();
    let read: serde_json::Value = serde_json::from_str(&stored.value.unwrap()).unwrap();
    assert_eq!(
        read,
        serde_json::from_str::<serde_json::Value>(edges).unwrap()
    );
    assert_eq!(
        service
            .list(
                &call,
                "corpus",
                &ListOptions {
                    limit: Some(1000),
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .entries
            .len(),
        LITERAL_KEYS.len(),
        "refusals stored nothing"
    );

    // The same keys through HTTP, percent-encoded in the path and the prefix query.
    let gw = TestGateway::start(service.clone(), &[]).await;
    let http = reqwest::Client::new();
    let token = gw.token("tenant-h", "install-h");
    for (i, key) in LITERAL_KEYS.iter().enumerate() {
        if *key == "🦀/../.." {
            continue; // dot segments are for URL parsers to resolve; reachable through list
        }
        let url = format!(
            "{}/namespaces/corpus/records/{}",
            gw.base,
            percent_encode(key)
        );
        let body: serde_json::Value = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (body["key"].as_str(), body["value"]["i"].as_u64()),
            (Some(*key), Some(i as u64)),
            "{key:?}"
        );
    }
    for key in REFUSED_KEYS.iter().filter(|k| !k.is_empty()) {
        let url = format!(
            "{}/namespaces/corpus/records/{}",
            gw.base,
            percent_encode(key)
        );
        let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 400, "{key:?}");
    }
}

on_both_engines!(corpus_on);
