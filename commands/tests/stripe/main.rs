//! The Stripe adapter runs the real `async-stripe` client against a local fake that speaks
//! Stripe's API (form-encoded requests, JSON responses, `Idempotency-Key` semantics), and
//! verifies webhooks with real `Stripe-Signature` headers.

use tessera_commands::fake_stripe::{signature, webhook_payload};
use tessera_commands::gateway::{
    GatewayError, GatewayEvent, IntentRequest, PaymentGateway, RefundRequest, StripeGateway,
};
use tessera_domain::values::{BookingId, Currency, Money, PaymentId};
use uuid::Uuid;

fn gateway(url: &str) -> StripeGateway {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    StripeGateway::new("sk_test_tessera", "whsec_test_secret", Some(url)).expect("client")
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR).expect("money")
}

#[tokio::test]
async fn creates_intents_idempotently_with_metadata() {
    let (url, fake) = tessera_commands::fake_stripe::start().await;
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
    let (url, _fake) = tessera_commands::fake_stripe::start().await;
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
    let (url, fake) = tessera_commands::fake_stripe::start().await;
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

#[tokio::test]
async fn webhooks_are_verified_and_replays_refused() {
    let stripe = gateway("http://127.0.0.1:9/");
    let payment_id = PaymentId(Uuid::new_v4());
    let payload = webhook_payload(
        "evt_1Qtessera",
        "payment_intent.succeeded",
        "pi_abc",
        payment_id,
        12_900,
    );
    let signed_at = 1_790_000_000;
    let header = signature(&payload, "whsec_test_secret", signed_at);

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
    let forged = signature(&payload, "whsec_other", signed_at);
    assert!(matches!(
        stripe.verify_webhook(&payload, &forged, signed_at + 5),
        Err(GatewayError::BadSignature(_))
    ));
    // Events we do not act on are recognised, not errors.
    let other = webhook_payload(
        "evt_1Qtessera",
        "payment_intent.processing",
        "pi_abc",
        payment_id,
        12_900,
    );
    let header = signature(&other, "whsec_test_secret", signed_at);
    assert!(matches!(
        stripe.verify_webhook(&other, &header, signed_at),
        Ok(GatewayEvent::Ignored { .. })
    ));
}
