//! The contract test: requests generated from the OpenAPI document (a fixed seed, a bounded
//! number per operation) are sent to every operation, as every kind of caller, with values at
//! and beyond the documented bounds, wrong types, text the platform refuses, and mangled bodies.
//! The server must never answer 5xx (but a documented 503), must answer only statuses the
//! document names for that operation, and must accept every documented parameter bound.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{Options, Server};

/// Requests generated per operation.
const PER_OPERATION: usize = 24;
const SEED: u64 = 19;

/// What generated values may refer to.
struct Known {
    listing: String,
    slot: String,
    booking: String,
    /// A user nobody else needs: admin routes may erase or demote them.
    user: String,
    tokens: Vec<(&'static str, Option<String>)>,
}

impl Known {
    fn id_for(&self, name: &str, rng: &mut StdRng) -> String {
        if rng.random_bool(0.15) {
            return uuid::Uuid::from_u128(rng.random()).to_string();
        }
        self.id_exact(name)
            .unwrap_or_else(|| uuid::Uuid::from_u128(rng.random()).to_string())
    }

    fn id_exact(&self, name: &str) -> Option<String> {
        Some(if name.contains("listing") {
            self.listing.clone()
        } else if name.contains("slot") {
            self.slot.clone()
        } else if name.contains("booking") {
            self.booking.clone()
        } else if name.contains("user") || name.contains("referred") {
            self.user.clone()
        } else {
            return None;
        })
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .map_or(schema, |s| resolve(doc, s)),
        None => schema,
    }
}

fn types(schema: &Value) -> Vec<String> {
    match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Text that tries the platform's text policy.
fn nasty_text(rng: &mut StdRng) -> String {
    const SAMPLES: &[&str] = &[
        "",
        " ",
        "changed my mind\u{0}",
        "tab\tand\nnewline",
        "\u{1b}[31mred",
        "Zoë's café — Øresund ✓ 東京",
        "'; DROP TABLE events; --",
        "\u{202e}evil",
        "a@b.c",
    ];
    if rng.random_bool(0.1) {
        return "x".repeat(rng.random_range(900..1_200));
    }
    SAMPLES[rng.random_range(0..SAMPLES.len())].to_owned()
}

fn number_in(schema: &Value, rng: &mut StdRng, integer: bool) -> Value {
    let min = schema["minimum"].as_f64();
    let max = schema["maximum"].as_f64();
    let exclusive_min = schema["exclusiveMinimum"].as_f64();
    let roll = rng.random_range(0..10);
    let v: f64 = match roll {
        0 => min.or(exclusive_min).unwrap_or(0.0) - 1.0,
        1 => max.unwrap_or(1e12) + 1.0,
        2 => {
            if integer {
                i64::MAX as f64
            } else {
                f64::MAX
            }
        }
        3 => min.unwrap_or(0.0),
        4 => max.unwrap_or(100.0),
        _ => {
            let lo = min.or(exclusive_min.map(|m| m + 1.0)).unwrap_or(0.0);
            let hi = max.unwrap_or(lo + 100.0).max(lo);
            rng.random_range(lo..=hi)
        }
    };
    if integer {
        json!(v.clamp(i64::MIN as f64, i64::MAX as f64).round() as i64)
    } else {
        json!(v)
    }
}

/// A value for `schema`: mostly valid, sometimes not.
fn generate(
    doc: &Value,
    schema: &Value,
    name: &str,
    known: &Known,
    rng: &mut StdRng,
    depth: u32,
) -> Value {
    let schema = resolve(doc, schema);
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array())
        && !options.is_empty()
    {
        let pick = &options[rng.random_range(0..options.len())];
        return generate(doc, pick, name, known, rng, depth);
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.is_empty()
        && rng.random_bool(0.9)
    {
        return values[rng.random_range(0..values.len())].clone();
    }
    let ts = types(schema);
    if ts.iter().any(|t| t == "null") && rng.random_bool(0.2) {
        return Value::Null;
    }
    let t = ts
        .iter()
        .find(|t| *t != "null")
        .cloned()
        .unwrap_or_else(|| "object".into());
    match t.as_str() {
        "integer" => number_in(schema, rng, true),
        "number" => number_in(schema, rng, false),
        "boolean" => json!(rng.random_bool(0.5)),
        "string" => match schema["format"].as_str() {
            Some("uuid") => json!(known.id_for(name, rng)),
            Some("date-time") => json!(
                (chrono::Utc::now() + chrono::TimeDelta::hours(rng.random_range(-48..24 * 60)))
                    .to_rfc3339()
            ),
            Some("date") => json!(
                (chrono::Utc::now() + chrono::TimeDelta::days(rng.random_range(-10..90)))
                    .date_naive()
                    .to_string()
            ),
            _ if rng.random_bool(0.3) => json!(nasty_text(rng)),
            _ => json!(match name {
                "email" => format!("fuzz{}@example.com", rng.random_range(0..1_000_000)),
                "password" => "correct horse battery".to_owned(),
                "currency" => "EUR".to_owned(),
                "kind" => ["package", "experience"][rng.random_range(0..2)].to_owned(),
                "role" => ["customer", "provider", "admin", "auditor", "analyst"]
                    [rng.random_range(0..5)]
                .to_owned(),
                "country" => "IT".to_owned(),
                _ => format!("fuzz {}", rng.random_range(0..1_000)),
            }),
        },
        "array" => {
            if depth > 3 {
                return json!([]);
            }
            let n = rng.random_range(0..3);
            Value::Array(
                (0..n)
                    .map(|_| generate(doc, &schema["items"], name, known, rng, depth + 1))
                    .collect(),
            )
        }
        _ => {
            if depth > 3 {
                return json!({});
            }
            let mut out = Map::new();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if let Some(props) = schema["properties"].as_object() {
                for (k, v) in props {
                    if required.contains(&k.as_str()) || rng.random_bool(0.6) {
                        out.insert(k.clone(), generate(doc, v, k, known, rng, depth + 1));
                    }
                }
            }
            Value::Object(out)
        }
    }
}

/// A body for an operation: valid-looking, or mangled one of several ways.
fn body_for(doc: &Value, op: &Value, known: &Known, rng: &mut StdRng) -> (String, Vec<u8>) {
    let content = &op["requestBody"]["content"];
    let schema = content["application/json"]["schema"].clone();
    let valid = generate(doc, &schema, "", known, rng, 0);
    match rng.random_range(0..12) {
        0 => ("application/json".into(), b"{\"unterminated\": ".to_vec()),
        1 => ("text/plain".into(), b"seats=2".to_vec()),
        2 => ("application/json".into(), vec![0xff, 0xfe, b'{', b'}']),
        3 => {
            let mut v = valid;
            if let Some(o) = v.as_object_mut() {
                o.insert("unexpected".into(), json!(true));
            }
            ("application/json".into(), v.to_string().into_bytes())
        }
        4 => (
            "application/json".into(),
            json!([1, 2, 3]).to_string().into_bytes(),
        ),
        5 => (
            "application/json".into(),
            format!("{{\"x\":\"{}\"}}", "a".repeat(70 * 1024)).into_bytes(),
        ),
        _ => ("application/json".into(), valid.to_string().into_bytes()),
    }
}

fn param_value(doc: &Value, p: &Value, known: &Known, rng: &mut StdRng) -> String {
    let name = p["name"].as_str().unwrap_or_default();
    match name {
        "Idempotency-Key" => {
            return if rng.random_bool(0.9) {
                uuid::Uuid::from_u128(rng.random()).to_string()
            } else {
                String::new()
            };
        }
        "Stripe-Signature" => return "t=1,v1=00".into(),
        "stream" => {
            return if rng.random_bool(0.7) {
                format!("booking-{}", known.booking)
            } else {
                nasty_text(rng)
            };
        }
        _ => {}
    }
    if rng.random_bool(0.05) {
        return "not-a-value".into();
    }
    match generate(doc, &p["schema"], name, known, rng, 0) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Whether `status` is documented for `op` (exactly, or by its class such as `4XX`).
fn documented(op: &Value, status: StatusCode) -> bool {
    let responses = &op["responses"];
    let code = status.as_u16().to_string();
    let class = format!("{}XX", status.as_u16() / 100);
    responses.get(&code).is_some()
        || responses.get(&class).is_some()
        || responses.get("default").is_some()
}

fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Request {
    method: Method,
    url: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
}

async fn send(s: &Server, r: Request) -> (StatusCode, String) {
    let mut request = s.client.request(r.method, &r.url);
    if let Some(t) = r.token {
        request = request.bearer_auth(t);
    }
    for (k, v) in r.headers {
        request = request.header(k, v);
    }
    if let Some((ct, bytes)) = r.body {
        request = request.header("content-type", ct).body(bytes);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.unwrap_or_default();
    let is_problem = content_type.starts_with("application/problem+json");
    let problem_ok = !(status.is_client_error() || status.is_server_error()) || is_problem;
    if is_problem {
        // Every code a problem carries is in the published table (docs/errors.md).
        let code = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|p| p["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if tessera_api::http::codes::find(&code).is_none() {
            return (
                status,
                format!("NOT A PROBLEM (unpublished code {code:?}): {text}"),
            );
        }
    }
    (
        status,
        if problem_ok {
            text.chars().take(300).collect()
        } else {
            format!(
                "NOT A PROBLEM ({content_type}): {}",
                text.chars().take(200).collect::<String>()
            )
        },
    )
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            if super::openapi::is_method(method) {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
    }
    out
}

fn url_for(s: &Server, path: &str, op: &Value) -> String {
    let root =
        op["servers"][0]["url"] == "/" || ["/healthz", "/readyz", "/metrics"].contains(&path);
    if root {
        format!("{}{path}", s.url)
    } else {
        s.api(path)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_requests_get_only_documented_answers() {
    let s = Server::start(Options {
        config: Some(tessera_api::http::ApiConfig {
            commands_per_second: 100_000,
            login_per_minute: 100_000,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let (_, doc) = s.get("/openapi.json", None).await;
    let customer = s.token("customer@tessera.test").await;
    let (listing, slot) = s.free_slot(2, 3).await;
    let (status, _, placed) = s
        .call(
            Method::POST,
            "/bookings",
            Some(&customer),
            Some(json!({ "slot_id": slot["slot_id"], "seats": 1 })),
            &[("idempotency-key", "contract".to_owned())],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let (status, registered) = s
        .post(
            "/auth/register",
            None,
            json!({ "email": "fuzz-target@example.com", "display_name": "Fuzz Target", "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let mut tokens: Vec<(&'static str, Option<String>)> = vec![("anonymous", None)];
    for (name, email) in [
        ("customer", "customer@tessera.test"),
        ("provider", "provider@tessera.test"),
        ("admin", "admin@tessera.test"),
        ("auditor", "auditor@tessera.test"),
        ("analyst", "analyst@tessera.test"),
    ] {
        tokens.push((name, Some(s.token(email).await)));
    }
    let known = Known {
        listing,
        slot: slot["slot_id"].as_str().expect("slot").to_owned(),
        booking: placed["booking_id"].as_str().expect("booking").to_owned(),
        user: registered["user_id"].as_str().expect("user").to_owned(),
        tokens,
    };
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut failures = Vec::new();
    let mut sent = 0;
    let ops = operations(&doc);
    assert!(ops.len() >= 40, "{} operations", ops.len());

    // 1. Documented bounds are accepted: each bounded query parameter alone (with the ones it
    // requires) at its minimum and its maximum, by a caller the operation admits.
    for (path, method, op) in &ops {
        if method != "get" {
            continue;
        }
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let path_filled = fill_path(path, &params, &known, &mut rng, true);
        for p in params.iter().filter(|p| p["in"] == "query") {
            let schema = resolve(&doc, &p["schema"]);
            for bound in ["minimum", "maximum"] {
                let Some(v) = schema[bound].as_f64() else {
                    continue;
                };
                let mut query = vec![(p["name"].as_str().unwrap_or_default().to_owned(), num(v))];
                for other in p["x-requires"].as_array().into_iter().flatten() {
                    let other = other.as_str().unwrap_or_default();
                    let partner = params.iter().find(|q| q["name"] == other).expect("partner");
                    let ps = resolve(&doc, &partner["schema"]);
                    query.push((other.to_owned(), num(ps["minimum"].as_f64().unwrap_or(0.0))));
                }
                let qs = query
                    .iter()
                    .map(|(k, v)| format!("{k}={}", percent(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                let mut answered = None;
                for (_, token) in &known.tokens {
                    let r = Request {
                        method: Method::GET,
                        url: format!("{}?{qs}", url_for(&s, &path_filled, op)),
                        token: token.clone(),
                        headers: Vec::new(),
                        body: None,
                    };
                    let (status, text) = send(&s, r).await;
                    sent += 1;
                    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                        answered = Some((status, text));
                        break;
                    }
                }
                if let Some((status, text)) = answered
                    && (status == StatusCode::BAD_REQUEST
                        || status == StatusCode::UNPROCESSABLE_ENTITY)
                {
                    failures.push(format!(
                        "GET {path}?{qs}: a documented bound was refused with {status}: {text}"
                    ));
                }
            }
        }
    }

    // 2. Generated requests: only documented statuses, problem bodies, never a 5xx.
    for (path, method, op) in &ops {
        for _ in 0..PER_OPERATION {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let filled = fill_path(path, &params, &known, &mut rng, false);
            let mut query = Vec::new();
            let mut headers = Vec::new();
            for p in &params {
                if !rng.random_bool(0.5) {
                    continue;
                }
                let value = param_value(&doc, p, &known, &mut rng);
                let name = p["name"].as_str().unwrap_or_default().to_owned();
                match p["in"].as_str() {
                    Some("query") => query.push(format!("{name}={}", percent(&value))),
                    Some("header") if reqwest::header::HeaderValue::from_str(&value).is_ok() => {
                        headers.push((name, value));
                    }
                    _ => {}
                }
            }
            let mut url = url_for(&s, &filled, op);
            if !query.is_empty() {
                url = format!("{url}?{}", query.join("&"));
            }
            let body = op
                .get("requestBody")
                .map(|_| body_for(&doc, op, &known, &mut rng));
            let token = if op.get("security").is_some() || rng.random_bool(0.3) {
                let weights = [1, 3, 2, 4, 1, 1];
                let total: u32 = weights.iter().sum();
                let mut pick = rng.random_range(0..total);
                let mut chosen = 0;
                for (i, w) in weights.iter().enumerate() {
                    if pick < *w {
                        chosen = i;
                        break;
                    }
                    pick -= w;
                }
                known.tokens[chosen].1.clone()
            } else {
                None
            };
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let what = format!("{method} {url}");
            let (status, text) = send(
                &s,
                Request {
                    method,
                    url,
                    token,
                    headers,
                    body,
                },
            )
            .await;
            sent += 1;
            if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                failures.push(format!("{what}: {status} {text}"));
            } else if !documented(op, status) {
                failures.push(format!("{what}: undocumented {status} {text}"));
            } else if text.starts_with("NOT A PROBLEM") {
                failures.push(format!("{what}: {status} {text}"));
            }
        }
    }
    eprintln!("contract: {sent} requests to {} operations", ops.len());
    assert!(
        failures.is_empty(),
        "{} of {sent} requests broke the contract:\n{}",
        failures.len(),
        failures.join("\n")
    );
    s.shutdown().await;
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

/// `path` with its parameters filled: known ids (always, when `faithful`), else sometimes junk.
fn fill_path(
    path: &str,
    params: &[Value],
    known: &Known,
    rng: &mut StdRng,
    faithful: bool,
) -> String {
    let mut out = path.to_owned();
    for p in params.iter().filter(|p| p["in"] == "path") {
        let name = p["name"].as_str().unwrap_or_default();
        let value = if name == "stream" {
            format!("booking-{}", known.booking)
        } else if faithful {
            known
                .id_exact(name)
                .unwrap_or_else(|| uuid::Uuid::nil().to_string())
        } else if rng.random_bool(0.08) {
            ["not-a-uuid", "%00", "..", "0"][rng.random_range(0..4)].to_owned()
        } else {
            known.id_for(name, rng)
        };
        out = out.replace(&format!("{{{name}}}"), &value);
    }
    out
}
