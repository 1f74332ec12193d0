//! A local fake of Stripe's API (form-encoded requests, JSON responses, `Idempotency-Key`
//! semantics) for tests that run the real `async-stripe` client, and signed webhook payloads.
//!
//! It keeps the objects it created, like Stripe: payment intents (which a test marks succeeded
//! with [`succeed`], as the customer's browser would), refunds, Express connected accounts and
//! their onboarding links, transfers (drawn on a succeeded charge) and their reversals, and
//! lists them, so reconciliation runs against its records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
    /// Objects by id, in creation order per kind (`payment_intent`, `refund`, `account`,
    /// `transfer`, `payout`).
    pub objects: Vec<Value>,
    /// Payout → the connected account whose balance it paid out.
    pub payout_accounts: HashMap<String, String>,
}

impl Fake {
    fn object_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.objects.iter_mut().find(|o| o["id"] == id)
    }

    fn object(&self, id: &str) -> Option<&Value> {
        self.objects.iter().find(|o| o["id"] == id)
    }

    fn list(&self, kind: &str) -> Value {
        let data: Vec<&Value> = self
            .objects
            .iter()
            .filter(|o| o["object"] == kind)
            .collect();
        json!({ "object": "list", "data": data, "has_more": false, "url": format!("/v1/{kind}s") })
    }
}

fn metadata(f: &HashMap<String, String>) -> HashMap<String, String> {
    f.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), v.clone()))
        })
        .collect()
}

pub type Shared = Arc<Mutex<Fake>>;

fn respond(
    fake: &Shared,
    path: &str,
    headers: &HeaderMap,
    form: HashMap<String, String>,
    make: impl FnOnce(&mut Fake, &HashMap<String, String>) -> Result<Value, String>,
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
    match make(&mut fake, &form) {
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
    respond(&fake, "/v1/payment_intents", &headers, form, |fake, f| {
        let amount: i64 = f
            .get("amount")
            .and_then(|a| a.parse().ok())
            .ok_or("amount is required")?;
        if amount < 50 {
            return Err("Amount must be at least €0.50 eur".into());
        }
        let id = format!("pi_{}", Uuid::new_v4().simple());
        let intent = json!({
            "id": id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
            "amount_received": 0, "capture_method": "automatic", "confirmation_method": "automatic",
            "created": 1_790_000_000, "currency": f.get("currency").cloned().unwrap_or_default(),
            "livemode": false, "metadata": metadata(f), "payment_method_types": ["card"],
            "status": "requires_payment_method", "client_secret": format!("{id}_secret_abc"),
            "latest_charge": null,
        });
        fake.objects.push(intent.clone());
        Ok(intent)
    })
}

/// Stripe cancels an intent that is not decided yet, and refuses one that succeeded.
async fn cancel_payment_intent(
    State(fake): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = format!("/v1/payment_intents/{id}/cancel");
    respond(&fake, &path, &headers, form, |fake, f| {
        let intent = fake
            .object_mut(&id)
            .ok_or_else(|| format!("No such payment_intent: '{id}'"))?;
        let status = intent["status"].as_str().unwrap_or_default().to_owned();
        if status == "succeeded" || status == "canceled" {
            return Err(format!(
                "You cannot cancel this PaymentIntent because it has a status of {status}."
            ));
        }
        intent["status"] = json!("canceled");
        intent["cancellation_reason"] = json!(f.get("cancellation_reason"));
        Ok(intent.clone())
    })
}

async fn payment_intent(State(fake): State<Shared>, Path(id): Path<String>) -> Response {
    let fake = fake.lock().expect("lock");
    match fake.object(&id) {
        Some(o) => Json(o.clone()).into_response(),
        None => not_found(&id),
    }
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": { "type": "invalid_request_error", "message": format!("No such object: '{id}'") } })),
    )
        .into_response()
}

async fn account(State(fake): State<Shared>, Path(id): Path<String>) -> Response {
    let fake = fake.lock().expect("lock");
    match fake.object(&id) {
        Some(o) => Json(o.clone()).into_response(),
        None => not_found(&id),
    }
}

async fn list_payment_intents(State(fake): State<Shared>) -> Response {
    Json(fake.lock().expect("lock").list("payment_intent")).into_response()
}

async fn list_refunds(State(fake): State<Shared>) -> Response {
    Json(fake.lock().expect("lock").list("refund")).into_response()
}

async fn list_transfers(State(fake): State<Shared>) -> Response {
    Json(fake.lock().expect("lock").list("transfer")).into_response()
}

async fn list_accounts(State(fake): State<Shared>) -> Response {
    Json(fake.lock().expect("lock").list("account")).into_response()
}

/// A connected account's payouts (`Stripe-Account` names the account, as with Stripe).
async fn list_payouts(State(fake): State<Shared>, headers: HeaderMap) -> Response {
    let fake = fake.lock().expect("lock");
    let account = headers
        .get("stripe-account")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let data: Vec<&Value> = fake
        .objects
        .iter()
        .filter(|o| {
            o["object"] == "payout"
                && o["id"]
                    .as_str()
                    .and_then(|id| fake.payout_accounts.get(id))
                    .is_some_and(|a| a == account)
        })
        .collect();
    Json(json!({ "object": "list", "data": data, "has_more": false, "url": "/v1/payouts" }))
        .into_response()
}

/// Stripe pays out (`status` `paid`) or fails to pay out (`failed`) `amount` of `account`'s
/// balance as payout `payout`; returns the `payout.<status>` webhook Stripe would send (a
/// connected account's event: it names the account).
pub fn payout(
    fake: &Shared,
    account: &str,
    payout: &str,
    event_id: &str,
    amount: i64,
    status: &str,
) -> String {
    let mut fake = fake.lock().expect("lock");
    let failed = status == "failed";
    let object = json!({
        "id": payout, "object": "payout", "amount": amount, "application_fee": null,
        "application_fee_amount": null, "arrival_date": 1_790_100_000, "automatic": true,
        "balance_transaction": null, "created": 1_790_000_000, "currency": "eur",
        "description": "STRIPE PAYOUT", "destination": "ba_1Fake", "failure_balance_transaction": null,
        "failure_code": if failed { json!("account_closed") } else { Value::Null },
        "failure_message": if failed { json!("The bank account has been closed.") } else { Value::Null },
        "livemode": false, "metadata": {}, "method": "standard", "original_payout": null,
        "payout_method": null, "reconciliation_status": "completed", "reversed_by": null,
        "source_type": "card", "statement_descriptor": null, "status": status, "trace_id": null,
        "type": "bank_account",
    });
    match fake.object_mut(payout) {
        Some(o) => *o = object.clone(),
        None => fake.objects.push(object.clone()),
    }
    fake.payout_accounts
        .insert(payout.to_owned(), account.to_owned());
    json!({
        "id": event_id, "object": "event", "api_version": "2025-03-31.basil", "created": 1_790_000_000,
        "livemode": false, "pending_webhooks": 1, "request": { "id": null, "idempotency_key": null },
        "type": format!("payout.{status}"), "account": account, "data": { "object": object }
    })
    .to_string()
}

async fn accounts(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    respond(&fake, "/v1/accounts", &headers, form, |fake, f| {
        if f.get("type").map(String::as_str) != Some("express") {
            return Err("only express accounts are faked".into());
        }
        let id = format!("acct_{}", &Uuid::new_v4().simple().to_string()[..16]);
        let account = json!({
            "id": id, "object": "account", "type": "express", "email": f.get("email"),
            "charges_enabled": false, "payouts_enabled": false, "details_submitted": false,
            "metadata": metadata(f), "created": 1_790_000_000,
        });
        fake.objects.push(account.clone());
        Ok(account)
    })
}

async fn account_links(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    respond(&fake, "/v1/account_links", &headers, form, |fake, f| {
        let account = f.get("account").ok_or("account is required")?;
        if fake.object(account).is_none() {
            return Err(format!("No such account: '{account}'"));
        }
        if f.get("return_url").is_none() || f.get("refresh_url").is_none() {
            return Err("return_url and refresh_url are required".into());
        }
        Ok(json!({
            "object": "account_link", "created": 1_790_000_000, "expires_at": 1_790_000_300,
            "url": format!("https://connect.stripe.test/setup/e/{account}/{}", Uuid::new_v4().simple()),
        }))
    })
}

async fn transfers(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    respond(&fake, "/v1/transfers", &headers, form, |fake, f| {
        let amount: i64 = f
            .get("amount")
            .and_then(|a| a.parse().ok())
            .ok_or("amount is required")?;
        let destination = f.get("destination").ok_or("destination is required")?;
        match fake.object(destination) {
            Some(a) if a["payouts_enabled"] == true => {}
            Some(_) => {
                return Err(format!(
                    "Your destination account {destination} needs to have at least one of the following capabilities enabled: transfers"
                ));
            }
            None => return Err(format!("No such destination: '{destination}'")),
        }
        // A transfer drawn on a charge cannot exceed it (net of the other transfers from it).
        let source = f
            .get("source_transaction")
            .ok_or("source_transaction is required here")?;
        let charged = fake
            .objects
            .iter()
            .find(|o| o["object"] == "payment_intent" && o["latest_charge"] == source.as_str())
            .map(|o| o["amount_received"].as_i64().unwrap_or(0))
            .ok_or_else(|| format!("No such charge: '{source}'"))?;
        let drawn: i64 = fake
            .objects
            .iter()
            .filter(|o| o["object"] == "transfer" && o["source_transaction"] == source.as_str())
            .map(|o| o["amount"].as_i64().unwrap_or(0) - o["amount_reversed"].as_i64().unwrap_or(0))
            .sum();
        if drawn + amount > charged {
            return Err(format!(
                "Insufficient funds: transfer of {amount} exceeds what is left of charge {source}"
            ));
        }
        let id = format!("tr_{}", Uuid::new_v4().simple());
        let transfer = json!({
            "id": id, "object": "transfer", "amount": amount, "amount_reversed": 0,
            "balance_transaction": null, "created": 1_790_000_200,
            "currency": f.get("currency").cloned().unwrap_or_default(), "description": null,
            "destination": destination, "destination_payment": null, "livemode": false,
            "metadata": metadata(f),
            "reversals": { "object": "list", "data": [], "has_more": false, "url": format!("/v1/transfers/{id}/reversals") },
            "reversed": false, "source_transaction": source, "source_type": "card",
            "transfer_group": f.get("transfer_group"),
        });
        fake.objects.push(transfer.clone());
        Ok(transfer)
    })
}

async fn reversals(
    State(fake): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = format!("/v1/transfers/{id}/reversals");
    respond(&fake, &path, &headers, form, |fake, f| {
        let amount: i64 = f
            .get("amount")
            .and_then(|a| a.parse().ok())
            .ok_or("amount is required")?;
        let transfer = fake
            .object_mut(&id)
            .ok_or_else(|| format!("No such transfer: '{id}'"))?;
        let total = transfer["amount"].as_i64().unwrap_or(0);
        let reversed = transfer["amount_reversed"].as_i64().unwrap_or(0);
        if reversed + amount > total {
            return Err(format!("Reversal of {amount} exceeds what is left of {id}"));
        }
        transfer["amount_reversed"] = json!(reversed + amount);
        transfer["reversed"] = json!(reversed + amount == total);
        Ok(json!({
            "id": format!("trr_{}", Uuid::new_v4().simple()), "object": "transfer_reversal",
            "amount": amount, "created": 1_790_000_300, "currency": transfer["currency"],
            "metadata": metadata(f), "transfer": id, "balance_transaction": null,
            "destination_payment_refund": null, "source_refund": null,
        }))
    })
}

/// Marks a payment intent succeeded, as the customer's browser completing the payment would
/// (with a charge the provider's transfer can draw on); returns its amount.
pub fn succeed(fake: &Shared, intent: &str) -> i64 {
    let mut fake = fake.lock().expect("lock");
    let o = fake.object_mut(intent).expect("known intent");
    assert_ne!(o["status"], "canceled", "a canceled intent cannot be paid");
    let amount = o["amount"].as_i64().unwrap_or(0);
    o["status"] = json!("succeeded");
    o["amount_received"] = json!(amount);
    o["latest_charge"] = json!(format!("ch_{}", &intent[3..]));
    amount
}

/// Completes (or restricts) a connected account's onboarding, as the provider finishing Stripe's
/// hosted flow would; returns the `account.updated` webhook Stripe would send.
pub fn onboard(fake: &Shared, account: &str, event_id: &str, active: bool) -> String {
    let mut fake = fake.lock().expect("lock");
    let o = fake.object_mut(account).expect("known account");
    o["charges_enabled"] = json!(active);
    o["payouts_enabled"] = json!(active);
    o["details_submitted"] = json!(true);
    if !active {
        o["requirements"] = json!({ "disabled_reason": "requirements.past_due", "currently_due": ["external_account"],
            "eventually_due": [], "past_due": ["external_account"], "pending_verification": [], "errors": [],
            "alternatives": null, "current_deadline": null });
    }
    json!({
        "id": event_id, "object": "event", "api_version": "2025-03-31.basil", "created": 1_790_000_000,
        "livemode": false, "pending_webhooks": 1, "request": { "id": null, "idempotency_key": null },
        "type": "account.updated", "account": account, "data": { "object": o.clone() }
    })
    .to_string()
}

async fn refunds(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    respond(&fake, "/v1/refunds", &headers, form, |fake, f| {
        let refund = json!({
            "id": format!("re_{}", Uuid::new_v4().simple()), "object": "refund",
            "amount": f.get("amount").and_then(|a| a.parse::<i64>().ok()).unwrap_or(0),
            "created": 1_790_000_100, "currency": "eur", "status": "succeeded",
            "payment_intent": f.get("payment_intent"), "metadata": {},
        });
        fake.objects.push(refund.clone());
        Ok(refund)
    })
}

/// Starts the fake on a free port; returns its base URL (with the trailing slash).
pub async fn start() -> (String, Shared) {
    let fake: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/v1/payment_intents",
            post(payment_intents).get(list_payment_intents),
        )
        .route("/v1/payment_intents/{id}", get(payment_intent))
        .route(
            "/v1/payment_intents/{id}/cancel",
            post(cancel_payment_intent),
        )
        .route("/v1/refunds", post(refunds).get(list_refunds))
        .route("/v1/accounts", post(accounts).get(list_accounts))
        .route("/v1/payouts", get(list_payouts))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/account_links", post(account_links))
        .route("/v1/transfers", post(transfers).get(list_transfers))
        .route("/v1/transfers/{id}/reversals", post(reversals))
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
