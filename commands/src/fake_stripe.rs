//! A local fake of Stripe's API (form-encoded requests, JSON responses, `Idempotency-Key`
//! semantics) for tests that run the real `async-stripe` client, and signed webhook payloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::{Value, json};
use uuid::Uuid;

use tessera_domain::values::PaymentId;

/// What the fake saw and answered.
#[derive(Debug, Default)]
pub struct Fake {
    /// Idempotency key -> the first response (Stripe replays it for the same key).
    pub responses: HashMap<String, Value>,
    /// Every request that reached the fake: (path, idempotency key, form).
    pub requests: Vec<(String, Option<String>, HashMap<String, String>)>,
}

pub type Shared = Arc<Mutex<Fake>>;

fn respond(
    fake: &Shared,
    path: &str,
    headers: &HeaderMap,
    form: HashMap<String, String>,
    make: impl FnOnce(&HashMap<String, String>) -> Result<Value, String>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut fake = fake.lock().expect("lock");
    fake.requests
        .push((path.to_owned(), key.clone(), form.clone()));
    if let Some(stored) = key.as_ref().and_then(|k| fake.responses.get(k)) {
        return Json(stored.clone()).into_response();
    }
    match make(&form) {
        Ok(body) => {
            if let Some(k) = key {
                fake.responses.insert(k, body.clone());
            }
            Json(body).into_response()
        }
        Err(message) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": { "type": "invalid_request_error", "message": message } })),
        )
            .into_response(),
    }
}

async fn payment_intents(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    respond(&fake, "/v1/payment_intents", &headers, form, |f| {
        let amount: i64 = f
            .get("amount")
            .and_then(|a| a.parse().ok())
            .ok_or("amount is required")?;
        if amount < 50 {
            return Err("Amount must be at least €0.50 eur".into());
        }
        let id = format!("pi_{}", Uuid::new_v4().simple());
        let metadata: HashMap<&str, &String> = f
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("metadata[")
                    .and_then(|k| k.strip_suffix(']'))
                    .map(|k| (k, v))
            })
            .collect();
        Ok(json!({
            "id": id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
            "amount_received": 0, "capture_method": "automatic", "confirmation_method": "automatic",
            "created": 1_790_000_000, "currency": f.get("currency").cloned().unwrap_or_default(),
            "livemode": false, "metadata": metadata, "payment_method_types": ["card"],
            "status": "requires_payment_method", "client_secret": format!("{id}_secret_abc"),
        }))
    })
}

async fn refunds(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    respond(&fake, "/v1/refunds", &headers, form, |f| {
        Ok(json!({
            "id": format!("re_{}", Uuid::new_v4().simple()), "object": "refund",
            "amount": f.get("amount").and_then(|a| a.parse::<i64>().ok()).unwrap_or(0),
            "created": 1_790_000_100, "currency": "eur", "status": "succeeded",
            "payment_intent": f.get("payment_intent"), "metadata": {},
        }))
    })
}

/// Starts the fake on a free port; returns its base URL (with the trailing slash).
pub async fn start() -> (String, Shared) {
    let fake: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/payment_intents", post(payment_intents))
        .route("/v1/refunds", post(refunds))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, fake)
}

/// A Stripe event about a PaymentIntent of ours, as Stripe would post it.
pub fn webhook_payload(
    event_id: &str,
    event_type: &str,
    provider_ref: &str,
    payment_id: PaymentId,
    amount: i64,
) -> String {
    json!({
        "id": event_id, "object": "event", "api_version": "2025-03-31.basil", "created": 1_790_000_000,
        "livemode": false, "pending_webhooks": 1, "request": { "id": null, "idempotency_key": null },
        "type": event_type,
        "data": { "object": {
            "id": provider_ref, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
            "amount_received": amount, "capture_method": "automatic", "confirmation_method": "automatic",
            "created": 1_790_000_000, "currency": "eur", "livemode": false,
            "metadata": { "tessera_payment_id": payment_id.to_string() },
            "payment_method_types": ["card"], "status": "succeeded",
            "last_payment_error": null
        }}
    })
    .to_string()
}

/// A valid `Stripe-Signature` header for `payload`, signed at `timestamp`.
pub fn signature(payload: &str, secret: &str, timestamp: i64) -> String {
    stripe_webhook::Webhook::generate_test_header(payload, secret, Some(timestamp))
}
