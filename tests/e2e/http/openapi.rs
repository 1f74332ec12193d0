//! The OpenAPI document is OpenAPI 3.1, generated from the code, and internally consistent:
//! every reference resolves, every operation has a tag, responses and a problem response, every
//! path parameter is declared.

use reqwest::StatusCode;
use serde_json::Value;

use super::{Options, Server};

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push(r);
                    }
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

pub fn is_method(key: &str) -> bool {
    matches!(
        key,
        "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
    )
}

#[tokio::test]
async fn the_openapi_document_is_complete_and_consistent() {
    let s = Server::start(Options::default()).await;
    let (status, doc) = s.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Tessera API");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "unresolved reference {r}");
    }

    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 30, "{} paths", paths.len());
    // Every webhook event type, with its payload (the `webhooks` section of OpenAPI 3.1).
    for kind in tessera_notify::webhooks::EVENT_TYPES {
        let body = &doc["webhooks"][kind]["post"]["requestBody"]["content"]["application/json"];
        assert!(
            body["schema"].is_object(),
            "webhook {kind}: {}",
            doc["webhooks"]
        );
    }
    // The API's routes live under /api/v1; the operations endpoints at the root.
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    for ops in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            paths[ops]["servers"][0]["url"], "/",
            "{ops} is served at the root"
        );
        assert_eq!(paths[ops]["get"]["tags"][0], "ops");
    }
    assert!(paths["/openapi.json"]["get"].is_object());
    for (path, ops) in paths {
        let operations = ops.as_object().expect("operations");
        // A path item also holds fields that are not operations (`servers`, `parameters`).
        for (method, op) in operations.iter().filter(|(k, _)| is_method(k)) {
            let what = format!("{method} {path}");
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{what}: no tag"
            );
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{what}: no responses"));
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{what}: no success response"
            );
            // The operations endpoints answer probes and scrapers, not requests that can be
            // wrong; every other operation documents how it refuses.
            let ops = op["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&"ops".into()));
            let problems = responses.iter().filter(|(k, _)| k.starts_with('4')).count();
            assert!(
                ops || problems > 0,
                "{what}: no problem response documented"
            );
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    declared.contains(&name),
                    "{what}: path parameter {name} is not declared"
                );
            }
        }
    }
    s.shutdown().await;
}
