//! The answers every operation can give besides its own, added to the OpenAPI document in one
//! place so that the document says everything the server does: the problems the shared
//! extractors and layers produce (malformed bodies and queries, sizes, content types, tokens,
//! roles, rate limits, read-your-writes waits). The contract test (`tests/e2e/http/contract.rs`)
//! sends generated requests to every operation and fails on any status not documented here or
//! on the operation itself.

use serde_json::{Map, Value, json};

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {
            "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } }
        }
    })
}

/// What an operation may answer because of what it takes, as (status, description).
fn implied(op: &Value, method: &str) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let has = |place: &str| params.iter().any(|p| p["in"] == place);
    if has("path") || has("query") || has("header") {
        out.push((
            "400",
            "A malformed path, query or header value (`request.invalid_path`, `request.invalid_query`, …), or a position beyond the log's head",
        ));
    }
    if has("query") {
        out.push((
            "422",
            "A query value outside its documented bounds or combination (`request.invalid`, with the field)",
        ));
    }
    if op.get("requestBody").is_some() {
        out.push((
            "400",
            "The body is not JSON (`request.malformed_json`) or not readable",
        ));
        out.push((
            "413",
            "The body is larger than 64 KiB (`request.too_large`)",
        ));
        out.push((
            "415",
            "The body is not `application/json` (`request.unsupported_media_type`)",
        ));
        out.push((
            "422",
            "The body does not validate: a field's type, bounds or text (`request.invalid`, with the fields)",
        ));
    }
    if op.get("security").is_some() {
        out.push((
            "401",
            "No valid access token, or its account no longer exists (`auth.unauthenticated`)",
        ));
        out.push((
            "403",
            "The caller lacks the role the operation needs (`auth.forbidden`)",
        ));
        if method != "get" {
            out.push((
                "429",
                "Over the caller's command rate (`request.rate_limited`; see `Retry-After`)",
            ));
        }
    }
    let reads_after = params
        .iter()
        .any(|p| p["name"] == "Tessera-Min-Position" || p["name"] == "min_position");
    if reads_after {
        out.push((
            "503",
            "The read models did not reach `Tessera-Min-Position` within the wait (`read.not_yet_consistent`; retry after `Retry-After`)",
        ));
    }
    out
}

/// Query parameters that only go together: each names the others it needs (as the OpenAPI
/// extension `x-requires`, which the contract test honours when it generates requests).
const TOGETHER: &[&[&str]] = &[&["lat", "lng"]];

/// The published error codes (`codes.rs`): the `code` enum of `Problem`, and the whole table
/// (status, title, meaning) as the extension `x-error-codes`.
fn publish_codes(doc: &mut Value) {
    let names: Vec<Value> = super::codes::ALL
        .iter()
        .map(|c| Value::from(c.code))
        .collect();
    if let Some(code) = doc
        .pointer_mut("/components/schemas/Problem/properties/code")
        .and_then(Value::as_object_mut)
    {
        code.insert("enum".into(), Value::Array(names));
    }
    if let Some(root) = doc.as_object_mut() {
        root.insert("x-error-codes".into(), super::codes::openapi());
    }
}

/// The document with every operation's implied answers added (an operation's own description
/// of a status wins), and parameter groups marked.
pub fn complete(mut doc: Value) -> Value {
    publish_codes(&mut doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch") {
                continue;
            }
            let ops_route = op["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "ops"));
            if ops_route {
                continue;
            }
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                for p in params.iter_mut() {
                    let name = p["name"].as_str().unwrap_or_default().to_owned();
                    if let Some(group) = TOGETHER.iter().find(|g| g.contains(&name.as_str())) {
                        let others: Vec<&str> =
                            group.iter().copied().filter(|n| *n != name).collect();
                        p["x-requires"] = json!(others);
                    }
                }
            }
            let added = implied(op, method);
            let responses = op.as_object_mut().map(|o| {
                o.entry("responses")
                    .or_insert_with(|| Value::Object(Map::new()))
            });
            if let Some(Value::Object(responses)) = responses {
                for (status, description) in added {
                    responses
                        .entry(status)
                        .or_insert_with(|| problem(description));
                }
            }
        }
    }
    doc
}
