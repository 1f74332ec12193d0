//! A customer's whole journey over HTTP, with the simulated gateway and with Stripe (the real
//! client against the fake Stripe server, and a signed webhook).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_api::startup::StripeConfig;

use super::{Options, Server, eventually};

fn position(headers: &reqwest::header::HeaderMap, body: &Value) -> i64 {
    let header: i64 = headers
        .get("tessera-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a command answers with Tessera-Position");
    assert_eq!(body["position"].as_i64(), Some(header), "{body}");
    header
}

async fn register_and_login(s: &Server, email: &str) -> String {
    let (status, headers, body) = s
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({ "email": email, "display_name": "Ada Lovelace", "password": "correct horse battery" })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    position(&headers, &body);
    let (status, tokens) = s
        .post(
            "/auth/login",
            None,
            json!({ "email": email, "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["roles"], json!(["customer"]));
    tokens["access_token"].as_str().expect("token").to_owned()
}

/// Holds `seats` seats with an idempotency key; returns (booking id, position).
/// `POST /bookings` under idempotency key `key`: status, headers, body.
async fn place(
    s: &Server,
    token: &str,
    slot: &str,
    seats: u32,
    key: &str,
) -> (StatusCode, reqwest::header::HeaderMap, serde_json::Value) {
    s.call(
        Method::POST,
        "/bookings",
        Some(token),
        Some(json!({ "slot_id": slot, "seats": seats })),
        &[("idempotency-key", key.to_owned())],
    )
    .await
}

async fn hold(s: &Server, token: &str, slot: &str, seats: u32, key: &str) -> (String, i64) {
    let (status, headers, body) = place(s, token, slot, seats, key).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let at = position(&headers, &body);
    (body["booking_id"].as_str().expect("id").to_owned(), at)
}

#[tokio::test]
async fn a_customer_books_pays_cancels_and_is_refunded() {
    let s = Server::start(Options::default()).await;
    let token = register_and_login(&s, "ada@example.com").await;

    // Search, then a slot far enough ahead that cancelling refunds everything.
    let (status, page) = s.get("/listings?limit=5", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page["total"].as_u64() > Some(0), "{page}");
    let city = page["hits"][0]["destination"]
        .as_str()
        .expect("destination");
    let (status, found) = s
        .get(&format!("/listings?q={}", super::urlencode(city)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert!(
        found["hits"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["destination"] == city)),
        "{found}"
    );
    assert!(
        page["facets"]["kind"]
            .as_array()
            .is_some_and(|k| !k.is_empty())
    );
    let (listing, slot) = s.free_slot(2, 10).await;
    let slot_id = slot["slot_id"].as_str().expect("slot id").to_owned();
    let remaining = slot["remaining"].as_i64().expect("remaining");

    // Hold; a retry with the same key answers the same booking, marked as a replay.
    let (booking, placed_at) = hold(&s, &token, &slot_id, 2, "hold-1").await;
    let (status, headers, again) = place(&s, &token, &slot_id, 2, "hold-1").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["booking_id"], booking.as_str());
    assert_eq!(
        headers.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    // If the stored answer is lost (it is committed without a flush of its own: a crash can
    // lose it), a retry replays the command from the log and answers exactly as the first time.
    sqlx::query("UPDATE idempotency_keys SET response = NULL, completed_at = NULL WHERE key = $1")
        .bind("hold-1")
        .execute(&s.db.pool)
        .await
        .expect("lose the stored answer");
    let (status, _, replayed) = place(&s, &token, &slot_id, 2, "hold-1").await;
    assert_eq!(status, StatusCode::CREATED, "{replayed}");
    assert_eq!(replayed["booking_id"], again["booking_id"]);
    assert_eq!(replayed["hold_expires_at"], again["hold_expires_at"]);
    assert!(again["position"].as_i64().is_some_and(|p| p > 0), "{again}");
    assert_eq!(replayed["position"], again["position"]);
    assert_eq!(replayed["replayed"], true);
    // The same key for another request is refused.
    let (status, _, body) = place(&s, &token, &slot_id, 1, "hold-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "request.idempotency_key_reused");

    // Read-your-writes: listed at once when the client passes the position it got.
    let (status, _, mine) = s
        .call(
            Method::GET,
            "/bookings",
            Some(&token),
            None,
            &[("tessera-min-position", placed_at.to_string())],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(mine[0]["booking_id"], booking.as_str(), "{mine}");
    assert_eq!(mine[0]["status"], "held");
    let (_, slots) = s
        .get(
            &format!("/listings/{listing}/slots?min_position={placed_at}&all=true"),
            None,
        )
        .await;
    let seen = slots
        .as_array()
        .and_then(|a| a.iter().find(|x| x["slot_id"] == slot_id.as_str()))
        .expect("the slot");
    assert_eq!(seen["remaining"].as_i64(), Some(remaining - 2), "{seen}");

    // Paying needs a confirmed address: the link sent at registration confirms it (once is
    // enough; again answers the same), and a forged one confirms nothing.
    let (status, headers, refused) = s
        .call(
            Method::POST,
            &format!("/bookings/{booking}/pay"),
            Some(&token),
            Some(json!({ "card": "4242 4242 4242 4242" })),
            &[],
        )
        .await;
    super::assert_problem(
        status,
        &headers,
        &refused,
        StatusCode::FORBIDDEN,
        "user.email_unverified",
    );
    let (_, me) = s.get("/me", Some(&token)).await;
    assert_eq!(me["email_verified"], false, "{me}");
    let admin = s.token("admin@tessera.test").await;
    let user = me["user_id"].as_str().expect("id");
    let link = super::verification_token(&s, &admin, user, 0).await;
    let last = if link.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &link[..link.len() - 1]);
    let (status, headers, body) = s
        .call(
            Method::POST,
            "/auth/verify-email",
            None,
            Some(json!({ "token": forged })),
            &[],
        )
        .await;
    super::assert_problem(
        status,
        &headers,
        &body,
        StatusCode::BAD_REQUEST,
        "auth.verification_link_invalid",
    );
    for _ in 0..2 {
        let (status, body) = s
            .post("/auth/verify-email", None, json!({ "token": link }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, me) = s.get("/me", Some(&token)).await;
    assert_eq!(me["email_verified"], true, "{me}");

    // Pay with the simulated gateway's good card: confirmed.
    let (status, headers, paid) = s
        .call(
            Method::POST,
            &format!("/bookings/{booking}/pay"),
            Some(&token),
            Some(json!({ "card": "4242 4242 4242 4242" })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["provider"], "simulated");
    assert_eq!(paid["booking_status"], "confirmed", "{paid}");
    let paid_at = position(&headers, &paid);
    let (status, detail) = s
        .get(
            &format!("/bookings/{booking}?min_position={paid_at}"),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["booking"]["status"], "confirmed", "{detail}");
    let total = detail["booking"]["total_minor"].as_i64().expect("total");
    assert_eq!(detail["booking"]["paid_minor"].as_i64(), Some(total));
    let types: Vec<&str> = detail["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert!(
        types.contains(&"BookingPlaced") && types.contains(&"BookingConfirmed"),
        "{types:?}"
    );
    assert_eq!(detail["payments"][0]["charged_minor"].as_i64(), Some(total));

    // Points for the confirmed booking (the loyalty reactor, then its projection).
    let earned = eventually("points awarded", || async {
        let (_, account) = s.get("/me/loyalty", Some(&token)).await;
        account["balance"].as_i64().filter(|b| *b > 0)
    })
    .await;

    // Quote, cancel, refunded in full, points reversed.
    let (status, quote) = s
        .get(
            &format!("/bookings/{booking}/cancellation-quote"),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{quote}");
    assert_eq!(quote["refund_minor"].as_i64(), Some(total), "{quote}");
    let (status, cancelled) = s
        .post(
            &format!("/bookings/{booking}/cancel"),
            Some(&token),
            json!({ "reason": "plans changed" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let refunded = eventually("refund completed", || async {
        let (_, d) = s.get(&format!("/bookings/{booking}"), Some(&token)).await;
        // Two projections (bookings, payments) each catch up on their own.
        (d["booking"]["refunded_minor"].as_i64() == Some(total)
            && d["payments"][0]["refunded_minor"].as_i64() == Some(total))
        .then_some(d)
    })
    .await;
    assert_eq!(refunded["booking"]["cancel_reason"], "plans changed");
    assert_eq!(
        refunded["payments"][0]["refunded_minor"].as_i64(),
        Some(total)
    );
    eventually("points reversed", || async {
        let (_, account) = s.get("/me/loyalty", Some(&token)).await;
        (account["balance"].as_i64() == Some(0) && account["reversed"].as_i64() == Some(earned))
            .then_some(())
    })
    .await;
    let (_, history) = s.get("/me/loyalty/history", Some(&token)).await;
    let kinds: Vec<&str> = history
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"reversed"), "{history}");
    // The booking's own view shows what it did to the balance: awarded, then reversed.
    let (_, detail) = s.get(&format!("/bookings/{booking}"), Some(&token)).await;
    let effects: Vec<(String, i64)> = detail["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["points"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        effects.contains(&("awarded".to_owned(), earned)),
        "{effects:?}"
    );
    assert!(
        effects
            .iter()
            .any(|(k, p)| k == "reversed" && p.abs() == earned),
        "{effects:?}"
    );

    // A declined card: 200 with the booking payable again (held), or a refusal, never a 5xx.
    let (second, _) = hold(&s, &token, &slot_id, 1, "hold-2").await;
    let (status, declined) = s
        .post(
            &format!("/bookings/{second}/pay"),
            Some(&token),
            json!({ "card": "4000000000000002" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{declined}");
    assert_eq!(declined["booking_status"], "held", "{declined}");
    s.shutdown().await;
}

#[tokio::test]
async fn stripe_payments_confirm_through_a_signed_webhook() {
    let (stripe_url, fake) = tessera_commands::fake_stripe::start().await;
    let secret = "whsec_e2e_secret";
    let s = Server::start(Options {
        stripe: Some(StripeConfig {
            secret_key: "sk_test_e2e".into(),
            webhook_secret: secret.into(),
            api_base: Some(stripe_url),
        }),
        config: None,
        fixtures: None,
    })
    .await;
    let token = s.token("customer@tessera.test").await;
    let (_, slot) = s.free_slot(1, 3).await;
    let (booking, _) = hold(
        &s,
        &token,
        slot["slot_id"].as_str().expect("id"),
        1,
        "stripe-1",
    )
    .await;

    let (status, started) = s
        .post(&format!("/bookings/{booking}/pay"), Some(&token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["provider"], "stripe");
    assert_eq!(started["booking_status"], "payment_pending");
    assert!(
        started["client_secret"]
            .as_str()
            .is_some_and(|c| c.contains("_secret_")),
        "{started}"
    );
    let provider_ref = started["provider_ref"].as_str().expect("pi");
    assert!(
        fake.lock()
            .expect("fake")
            .requests
            .iter()
            .any(|(path, key, _)| path == "/v1/payment_intents" && key.is_some()),
        "the real client called the fake with an idempotency key"
    );

    let payment_id = started["payment_id"].as_str().expect("payment id");
    let (_, detail) = s.get(&format!("/bookings/{booking}"), Some(&token)).await;
    let total = detail["booking"]["total_minor"].as_i64().unwrap_or(0);
    let payload = tessera_commands::fake_stripe::webhook_payload(
        "evt_e2e_1",
        "payment_intent.succeeded",
        provider_ref,
        tessera_domain::values::PaymentId(payment_id.parse().expect("uuid")),
        total,
    );
    let post = |signature: String| {
        let s = &s;
        let payload = payload.clone();
        async move {
            let response = s
                .client
                .post(s.api("/payments/stripe/webhook"))
                .header("stripe-signature", signature)
                .header("content-type", "application/json")
                .body(payload)
                .send()
                .await
                .expect("webhook");
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let now = chrono::Utc::now().timestamp();
    // A forged signature is refused and changes nothing.
    let (status, body) = post(tessera_commands::fake_stripe::signature(
        &payload,
        "whsec_wrong",
        now,
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "payment.invalid_webhook");
    // Issue 19, point 4: a body that is not UTF-8 is a problem response too, not plain text.
    let response = s
        .client
        .post(s.api("/payments/stripe/webhook"))
        .header("stripe-signature", "t=1,v1=00")
        .header("content-type", "application/json")
        .body(vec![0xff, 0xfe, b'{', b'}'])
        .send()
        .await
        .expect("webhook");
    let headers = response.headers().clone();
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    super::assert_problem(
        status,
        &headers,
        &body,
        StatusCode::BAD_REQUEST,
        "payment.invalid_webhook",
    );
    // The real one confirms; its redelivery is harmless.
    let valid = tessera_commands::fake_stripe::signature(&payload, secret, now);
    for _ in 0..2 {
        let (status, body) = post(valid.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let confirmed = eventually("confirmed by the webhook", || async {
        let (_, d) = s.get(&format!("/bookings/{booking}"), Some(&token)).await;
        (d["booking"]["status"] == "confirmed").then_some(d)
    })
    .await;
    let confirmations = confirmed["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["event_type"] == "BookingConfirmed")
        .count();
    assert_eq!(
        confirmations, 1,
        "the redelivered webhook confirmed nothing twice"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_provider_publishes_schedules_and_reads_its_changes() {
    let s = Server::start(Options::default()).await;
    let token = s.token("provider@tessera.test").await;
    let listing = json!({
        "kind": "experience", "title": "Azulejo painting workshop",
        "description": "Paint your own Portuguese tile with a master ceramicist.",
        "destination": { "name": "Lisbon", "country": "Portugal", "lat": 38.7223, "lng": -9.1393 },
        "category": "workshops", "duration_minutes": 150, "includes": ["materials", "tea"],
        "price_minor": 6500, "currency": "EUR",
        "policy": [{ "min_hours_before": 48, "refund_percent": 100 }]
    });
    let (status, headers, published) = s
        .call(
            Method::POST,
            "/provider/listings",
            Some(&token),
            Some(listing.clone()),
            &[("idempotency-key", "pub-1".into())],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let at = position(&headers, &published);
    let id = published["listing_id"].as_str().expect("id").to_owned();

    // Read it back at once (read-your-writes), twice: the second answer may come from the cache.
    for _ in 0..2 {
        let (status, view) = s
            .get(&format!("/listings/{id}?min_position={at}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["title"], "Azulejo painting workshop");
        assert_eq!(view["next_available_at"], Value::Null);
    }
    let starts = chrono::Utc::now() + chrono::TimeDelta::days(20);
    let (status, headers, slot) = s
        .call(
            Method::POST,
            &format!("/provider/listings/{id}/slots"),
            Some(&token),
            Some(json!({ "starts_at": starts.to_rfc3339(), "ends_at": (starts + chrono::TimeDelta::hours(3)).to_rfc3339(), "capacity": 8 })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{slot}");
    let at = position(&headers, &slot);

    // A change is never hidden by a cached answer once its position is asked for.
    let mut changed = listing.clone();
    changed["title"] = json!("Azulejo tile painting");
    changed["price_minor"] = json!(7000);
    let (status, headers, updated) = s
        .call(
            Method::PUT,
            &format!("/provider/listings/{id}"),
            Some(&token),
            Some(changed),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let after = position(&headers, &updated);
    assert!(after > at);
    let (_, view) = s
        .get(&format!("/listings/{id}?min_position={after}"), None)
        .await;
    assert_eq!(view["title"], "Azulejo tile painting", "{view}");
    assert_eq!(view["price_minor"], 7000);
    assert_eq!(view["free_seats"], 8);
    assert!(view["next_available_at"].is_string(), "{view}");
    let (_, found) = s
        .get(&format!("/listings?q=azulejo&min_position={after}"), None)
        .await;
    assert_eq!(found["hits"][0]["listing_id"], id.as_str(), "{found}");
    assert_eq!(found["hits"][0]["title"], "Azulejo tile painting");

    // Another provider may not touch it; retiring removes it from search.
    let other = s.token("provider1@tessera.test").await;
    let (status, body) = s
        .post(
            &format!("/provider/listings/{id}/retire"),
            Some(&other),
            json!({ "reason": "mine now" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "listing.not_yours");
    let (status, headers, retired) = s
        .call(
            Method::POST,
            &format!("/provider/listings/{id}/retire"),
            Some(&token),
            Some(json!({ "reason": "season over" })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retired}");
    let gone = position(&headers, &retired);
    let (_, found) = s
        .get(&format!("/listings?q=azulejo&min_position={gone}"), None)
        .await;
    assert_eq!(found["total"], 0, "{found}");
    let (_, mine) = s
        .get(
            &format!("/provider/listings?min_position={gone}"),
            Some(&token),
        )
        .await;
    assert!(
        mine.as_array().is_some_and(|l| l
            .iter()
            .any(|l| l["listing_id"] == id.as_str() && l["retired"] == true)),
        "{mine}"
    );
    s.shutdown().await;
}
