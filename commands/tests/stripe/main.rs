//! The Stripe adapter runs the real `async-stripe` client against a local fake that speaks
//! Stripe's API (form-encoded requests, JSON responses, `Idempotency-Key` semantics), and
//! verifies webhooks with real `Stripe-Signature` headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::{Value, json};
use tessera_commands::gateway::{
    GatewayError, GatewayEvent, IntentRequest, PaymentGateway, RefundRequest, StripeGateway,
};
use tessera_domain::values::{BookingId, Currency, Money, PaymentId};
use uuid::Uuid;

#[derive(Default)]
struct Fake {
    /// Idempotency key -> the first response (Stripe replays it for the same key).
    responses: HashMap<String, Value>,
    /// Every request that reached the fake: (path, idempotency key, form).
    requests: Vec<(String, Option<String>, HashMap<String, String>)>,
}

type Shared = Arc<Mutex<Fake>>;

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

async fn start_fake() -> (String, Shared) {
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

fn gateway(url: &str) -> StripeGateway {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    StripeGateway::new("sk_test_tessera", "whsec_test_secret", Some(url)).expect("client")
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR).expect("money")
}

#[tokio::test]
async fn creates_intents_idempotently_with_metadata() {
    let (url, fake) = start_fake().await;
    let stripe = gateway(&url);
    let request = IntentRequest {
        payment_id: PaymentId(Uuid::new_v4()),
        booking_id: BookingId(Uuid::new_v4()),
        amount: eur(12_900),
        card: None,
        idempotency_key: "cmd-1".into(),
    };
    let first = stripe.create_intent(&request).await.expect("intent");
    let again = stripe.create_intent(&request).await.expect("retry");
    assert!(first.provider_ref.starts_with("pi_"));
    assert_eq!(again, first, "same idempotency key, same intent");
    assert!(
        first
            .client_secret
            .as_deref()
            .is_some_and(|s| s.contains("_secret_"))
    );
    let fake = fake.lock().expect("lock");
    assert_eq!(fake.requests.len(), 2);
    let (path, key, form) = &fake.requests[0];
    assert_eq!(path, "/v1/payment_intents");
    assert_eq!(
        key.as_deref(),
        Some("cmd-1"),
        "the real client sent our idempotency key"
    );
    assert_eq!(form.get("amount").map(String::as_str), Some("12900"));
    assert_eq!(form.get("currency").map(String::as_str), Some("eur"));
    assert_eq!(
        form.get("metadata[tessera_payment_id]"),
        Some(&request.payment_id.to_string())
    );
}

#[tokio::test]
async fn stripe_refusals_are_typed() {
    let (url, _fake) = start_fake().await;
    let request = IntentRequest {
        payment_id: PaymentId(Uuid::new_v4()),
        booking_id: BookingId(Uuid::new_v4()),
        amount: eur(10),
        card: None,
        idempotency_key: "cmd-2".into(),
    };
    match gateway(&url).create_intent(&request).await {
        Err(GatewayError::Refused(message)) => assert!(message.contains("at least"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nothing listens here: unavailable, not refused.
    let closed = gateway("http://127.0.0.1:9/").create_intent(&request).await;
    assert!(
        matches!(closed, Err(GatewayError::Unavailable(_))),
        "{closed:?}"
    );
}

#[tokio::test]
async fn refunds_go_to_the_payment_intent() {
    let (url, fake) = start_fake().await;
    let refund_id = Uuid::new_v4();
    let id = gateway(&url)
        .refund(&RefundRequest {
            provider_ref: "pi_123".into(),
            refund_id,
            amount: eur(5_000),
            idempotency_key: format!("refund-{refund_id}"),
        })
        .await
        .expect("refund");
    assert!(id.starts_with("re_"));
    let fake = fake.lock().expect("lock");
    let (path, key, form) = &fake.requests[0];
    assert_eq!(path, "/v1/refunds");
    assert_eq!(key.as_deref(), Some(format!("refund-{refund_id}").as_str()));
    assert_eq!(
        form.get("payment_intent").map(String::as_str),
        Some("pi_123")
    );
    assert_eq!(form.get("amount").map(String::as_str), Some("5000"));
}

fn webhook_payload(event_type: &str, payment_id: PaymentId) -> String {
    json!({
        "id": "evt_1Qtessera", "object": "event", "api_version": "2025-03-31.basil", "created": 1_790_000_000,
        "livemode": false, "pending_webhooks": 1, "request": { "id": null, "idempotency_key": null },
        "type": event_type,
        "data": { "object": {
            "id": "pi_abc", "object": "payment_intent", "amount": 12_900, "amount_capturable": 0,
            "amount_received": 12_900, "capture_method": "automatic", "confirmation_method": "automatic",
            "created": 1_790_000_000, "currency": "eur", "livemode": false,
            "metadata": { "tessera_payment_id": payment_id.to_string() },
            "payment_method_types": ["card"], "status": "succeeded",
            "last_payment_error": null
        }}
    })
    .to_string()
}

#[tokio::test]
async fn webhooks_are_verified_and_replays_refused() {
    let stripe = gateway("http://127.0.0.1:9/");
    let payment_id = PaymentId(Uuid::new_v4());
    let payload = webhook_payload("payment_intent.succeeded", payment_id);
    let signed_at = 1_790_000_000;
    let header = stripe_webhook::Webhook::generate_test_header(
        &payload,
        "whsec_test_secret",
        Some(signed_at),
    );

    let event = stripe
        .verify_webhook(&payload, &header, signed_at + 5)
        .expect("valid webhook");
    assert_eq!(
        event,
        GatewayEvent::PaymentSucceeded {
            event_id: "evt_1Qtessera".into(),
            provider_ref: "pi_abc".into(),
            payment_id: Some(payment_id)
        }
    );
    // Replayed after the tolerance window.
    assert!(matches!(
        stripe.verify_webhook(&payload, &header, signed_at + 301),
        Err(GatewayError::BadSignature(_))
    ));
    // Tampered body.
    let tampered = payload.replace("12900", "1");
    assert!(matches!(
        stripe.verify_webhook(&tampered, &header, signed_at + 5),
        Err(GatewayError::BadSignature(_))
    ));
    // Signed with another secret.
    let forged =
        stripe_webhook::Webhook::generate_test_header(&payload, "whsec_other", Some(signed_at));
    assert!(matches!(
        stripe.verify_webhook(&payload, &forged, signed_at + 5),
        Err(GatewayError::BadSignature(_))
    ));
    // Events we do not act on are recognised, not errors.
    let other = webhook_payload("payment_intent.processing", payment_id);
    let header =
        stripe_webhook::Webhook::generate_test_header(&other, "whsec_test_secret", Some(signed_at));
    assert!(matches!(
        stripe.verify_webhook(&other, &header, signed_at),
        Ok(GatewayEvent::Ignored { .. })
    ));
}
