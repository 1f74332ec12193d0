//! Moving a booking to another date over HTTP: one atomic step (the old slot's seats come
//! back, the new slot's are taken), refused when the new slot is full, of another listing or
//! the same; a cheaper slot refunds the difference through the gateway and the books stay
//! balanced; a dearer slot holds the seats and charges the difference with a second payment
//! (simulated gateway, and Stripe through its webhook), whose decline moves nothing; the old
//! tickets stop opening doors; the customer is told; and a move racing a placement for the
//! last seat of the new slot is decided once.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Options, Server, assert_problem, eventually};

async fn slot_in(
    s: &Server,
    provider: &str,
    listing: &str,
    days: i64,
    capacity: u32,
    price: i64,
) -> String {
    super::new_slot(
        s,
        provider,
        listing,
        chrono::TimeDelta::days(days),
        capacity,
        Some(price),
    )
    .await
}

async fn place(s: &Server, customer: &str, slot: &str, seats: u32) -> (StatusCode, Value) {
    let (status, _, body) = s
        .call(
            Method::POST,
            "/bookings",
            Some(customer),
            Some(json!({ "slot_id": slot, "seats": seats })),
            &[("idempotency-key", uuid::Uuid::new_v4().to_string())],
        )
        .await;
    (status, body)
}

/// Places and pays a booking; returns its id.
async fn paid(s: &Server, customer: &str, slot: &str, seats: u32) -> String {
    super::paid_booking(s, customer, slot, seats, &uuid::Uuid::new_v4().to_string()).await
}

async fn reschedule(
    s: &Server,
    token: &str,
    booking: &str,
    slot: &str,
    key: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    s.call(
        Method::POST,
        &format!("/bookings/{booking}/reschedule"),
        Some(token),
        Some(json!({ "slot_id": slot })),
        &[("idempotency-key", key.into())],
    )
    .await
}

/// The remaining seats of `slot` of `listing`, once the read side shows `want`.
async fn remaining_becomes(s: &Server, listing: &str, slot: &str, want: i64) {
    eventually(&format!("slot {slot} shows {want} seats left"), || async {
        let (_, slots) = s
            .get(&format!("/listings/{listing}/slots?all=true"), None)
            .await;
        slots
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["slot_id"] == slot)
            .filter(|x| x["remaining"] == want)
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_moves_in_one_step_and_a_cheaper_date_refunds_the_difference() {
    let s = Server::start(Options::default()).await;
    let provider = s.token("provider@tessera.test").await;
    let elsewhere_provider = s.token("provider1@tessera.test").await;
    let customer = s.token("customer@tessera.test").await;
    let stranger = s.token("customer1@tessera.test").await;
    let admin = s.token("admin@tessera.test").await;
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"].as_str().expect("listing").to_owned();
    let (_, theirs) = s.get("/provider/listings", Some(&elsewhere_provider)).await;
    let other_listing = theirs[0]["listing_id"]
        .as_str()
        .expect("listing")
        .to_owned();

    let first = slot_in(&s, &provider, &listing, 20, 4, 5_000).await;
    let same_price = slot_in(&s, &provider, &listing, 21, 4, 5_000).await;
    let cheaper = slot_in(&s, &provider, &listing, 22, 4, 3_000).await;
    let dearer = slot_in(&s, &provider, &listing, 23, 4, 9_000).await;
    let full = slot_in(&s, &provider, &listing, 24, 1, 5_000).await;
    let foreign = slot_in(&s, &elsewhere_provider, &other_listing, 25, 4, 5_000).await;
    paid(&s, &stranger, &full, 1).await;
    let booking = paid(&s, &customer, &first, 2).await;
    let (_, old_tickets) = s
        .get(&format!("/bookings/{booking}/tickets"), Some(&customer))
        .await;
    let old_ticket = old_tickets[0]["token"].as_str().expect("ticket").to_owned();

    // Same price: moved, nothing refunded; a retry with the same key answers the same.
    let (status, _, moved) = reschedule(&s, &customer, &booking, &same_price, "move-1").await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["slot_id"], same_price.as_str());
    assert_eq!(
        (
            moved["total_minor"].as_i64(),
            moved["refund_minor"].as_i64()
        ),
        (Some(10_000), Some(0))
    );
    let (status, _, again) = reschedule(&s, &customer, &booking, &same_price, "move-1").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["replayed"], true, "{again}");
    let strip = |mut v: Value| {
        v.as_object_mut().expect("object").remove("replayed");
        v
    };
    assert_eq!(
        strip(again),
        strip(moved),
        "the first answer, nothing moved twice"
    );
    remaining_becomes(&s, &listing, &first, 4).await;
    remaining_becomes(&s, &listing, &same_price, 2).await;

    // Refusals: someone else's booking, the slot it is on, a dearer slot for an admin (who
    // cannot charge the customer), a full one, another listing's, a slot that does not exist.
    // Nothing moves.
    let (status, headers, body) = reschedule(&s, &stranger, &booking, &cheaper, "x-1").await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::NOT_FOUND,
        "booking.not_found",
    );
    let (status, headers, body) = reschedule(&s, &customer, &booking, &same_price, "x-2").await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "booking.same_slot",
    );
    let (status, headers, body) = s
        .call(
            Method::POST,
            &format!("/admin/bookings/{booking}/reschedule"),
            Some(&admin),
            Some(json!({ "slot_id": dearer, "reason": "customer phoned" })),
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "booking.reschedule_costs_more",
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("80.00")),
        "{body}"
    );
    let (status, headers, body) = reschedule(&s, &customer, &booking, &full, "x-4").await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "slot.sold_out",
    );
    let (status, headers, body) = reschedule(&s, &customer, &booking, &foreign, "x-5").await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "booking.other_listing",
    );
    let nowhere = uuid::Uuid::new_v4().to_string();
    let (status, headers, body) = reschedule(&s, &customer, &booking, &nowhere, "x-6").await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::NOT_FOUND,
        "slot.not_found",
    );

    // Cheaper: 2 seats × 20.00 come back through the gateway; the books stay balanced.
    let (status, _, moved) = reschedule(&s, &customer, &booking, &cheaper, "move-2").await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(
        (
            moved["total_minor"].as_i64(),
            moved["refund_minor"].as_i64()
        ),
        (Some(6_000), Some(4_000))
    );
    let detail = eventually("the difference refunded", || async {
        let (_, d) = s
            .get(&format!("/bookings/{booking}"), Some(&customer))
            .await;
        (d["booking"]["refunded_minor"] == 4_000).then_some(d)
    })
    .await;
    let b = &detail["booking"];
    assert_eq!(b["status"], "confirmed", "{detail}");
    assert_eq!(b["slot_id"], cheaper.as_str());
    assert_eq!(
        (b["paid_minor"].as_i64(), b["total_minor"].as_i64()),
        (Some(10_000), Some(6_000))
    );
    let moves = detail["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["event_type"] == "BookingRescheduled")
        .count();
    assert_eq!(moves, 2, "history shows both moves: {detail}");
    remaining_becomes(&s, &listing, &same_price, 4).await;
    remaining_becomes(&s, &listing, &cheaper, 2).await;
    let ledger = eventually("the ledger clean", || async {
        let (_, r) = s.get("/admin/ledger/check", Some(&admin)).await;
        (r["clean"] == true).then_some(r)
    })
    .await;
    assert_eq!(ledger["violations"], json!([]), "{ledger:#}");

    // A cancellation now refunds from what is left (6,000 at most), never the 10,000 paid.
    let (_, quote) = s
        .get(
            &format!("/bookings/{booking}/cancellation-quote"),
            Some(&customer),
        )
        .await;
    assert!(
        quote["refund_minor"].as_i64().is_some_and(|r| r <= 6_000),
        "{quote}"
    );

    // The old ticket opens no door; the new ones name the new slot.
    let (status, headers, body) = s
        .call(
            Method::POST,
            &format!("/provider/slots/{cheaper}/check-in"),
            Some(&provider),
            Some(json!({ "token": old_ticket })),
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "ticket.wrong_slot",
    );
    let (_, new_tickets) = s
        .get(&format!("/bookings/{booking}/tickets"), Some(&customer))
        .await;
    assert_ne!(new_tickets[0]["token"], old_tickets[0]["token"]);

    // An admin moves it back on the customer's behalf, with a reason recorded on the event;
    // without a reason, nothing moves.
    let later = slot_in(&s, &provider, &listing, 26, 4, 3_000).await;
    let (status, headers, body) = s
        .call(
            Method::POST,
            &format!("/admin/bookings/{booking}/reschedule"),
            Some(&admin),
            Some(json!({ "slot_id": later, "reason": " " })),
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );
    let (status, _, body) = s
        .call(
            Method::POST,
            &format!("/admin/bookings/{booking}/reschedule"),
            Some(&admin),
            Some(json!({ "slot_id": later, "reason": "customer phoned: wrong date" })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let detail = eventually("the admin's move in the history", || async {
        let (_, d) = s
            .get(&format!("/bookings/{booking}"), Some(&customer))
            .await;
        (d["booking"]["slot_id"] == later.as_str()).then_some(d)
    })
    .await;
    let last = detail["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .rev()
        .find(|e| e["event_type"] == "BookingRescheduled")
        .expect("moved")
        .clone();
    assert_eq!(last["reason"], "customer phoned: wrong date", "{last}");
    assert!(
        last["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("user:")),
        "{last}"
    );

    // The customer is told each move, with the new date.
    let told = eventually("three move messages", || async {
        let (_, list) = s
            .get(
                &format!("/admin/outbox?template=booking_rescheduled&booking_id={booking}"),
                Some(&admin),
            )
            .await;
        let list = list.as_array().cloned().unwrap_or_default();
        (list.len() == 3).then_some(list)
    })
    .await;
    assert!(
        told.iter().all(|m| m["subject"]
            .as_str()
            .is_some_and(|x| x.starts_with("Moved:"))),
        "{told:?}"
    );
    // Each move's calendar entry revises the confirmation's (same UID, higher SEQUENCE), so
    // calendars move the event instead of adding one.
    let (_, confirmed) = s
        .get(
            &format!("/admin/outbox?template=booking_confirmed&booking_id={booking}"),
            Some(&admin),
        )
        .await;
    let mut seen = vec![calendar_sequence(&s, &booking, &confirmed[0]).await];
    for m in told.iter().rev() {
        seen.push(calendar_sequence(&s, &booking, m).await);
    }
    assert_eq!(seen[0], 0, "the confirmation is the first revision");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    s.shutdown().await;
}

/// Each round: one seat left on the target slot; a customer moves a booking there while
/// another places a booking for it. Exactly one gets it, and the slot is never oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_and_a_placement_racing_for_the_last_seat_are_decided_once() {
    let s = Server::start(Options::default()).await;
    let provider = s.token("provider@tessera.test").await;
    let mover = s.token("customer@tessera.test").await;
    let rival = s.token("customer1@tessera.test").await;
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"].as_str().expect("listing").to_owned();
    let (mut moves, mut places) = (0, 0);
    for round in 0..4 {
        let from = slot_in(&s, &provider, &listing, 30 + round, 2, 5_000).await;
        let target = slot_in(&s, &provider, &listing, 40 + round, 1, 5_000).await;
        let booking = paid(&s, &mover, &from, 1).await;
        let key = format!("race-{round}");
        let ((moved, _, body), (placed, placement)) = tokio::join!(
            reschedule(&s, &mover, &booking, &target, &key),
            place(&s, &rival, &target, 1),
        );
        match (moved, placed) {
            (StatusCode::OK, StatusCode::CONFLICT) => {
                assert_eq!(placement["code"], "slot.sold_out", "{placement}");
                moves += 1;
                remaining_becomes(&s, &listing, &from, 2).await;
            }
            (StatusCode::CONFLICT, StatusCode::CREATED) => {
                assert_eq!(body["code"], "slot.sold_out", "{body}");
                places += 1;
                remaining_becomes(&s, &listing, &from, 1).await;
            }
            other => {
                panic!("round {round}: exactly one must win, got {other:?}: {body} {placement}")
            }
        }
        remaining_becomes(&s, &listing, &target, 0).await;
    }
    assert_eq!(moves + places, 4);
    s.shutdown().await;
}

/// The SEQUENCE of the calendar entry of `message` (delivered as an `.eml` file), whose UID must
/// be the booking's.
async fn calendar_sequence(s: &Server, booking: &str, message: &Value) -> u64 {
    let id = message["id"].as_str().expect("id");
    let path = s.mail_dir().join(format!("{id}.eml"));
    let text = super::eventually("the message is delivered", || async {
        std::fs::read_to_string(&path).ok()
    })
    .await
    .replace("=\r\n", "");
    assert!(text.contains(&format!("UID:{booking}@tessera")), "{text}");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("SEQUENCE:"))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("a SEQUENCE")
}

/// The move's answer for a dearer slot (202), whose simulated top-up was decided.
async fn move_dearer(
    s: &Server,
    token: &str,
    booking: &str,
    slot: &str,
    card: Option<&str>,
    key: &str,
) -> Value {
    let (status, _, body) = s
        .call(
            Method::POST,
            &format!("/bookings/{booking}/reschedule"),
            Some(token),
            Some(json!({ "slot_id": slot, "card": card })),
            &[("idempotency-key", key.into())],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dearer_date_is_paid_by_a_top_up_and_a_declined_one_moves_nothing() {
    let s = Server::start(Options::default()).await;
    let provider = s.token("provider@tessera.test").await;
    let customer = s.token("customer@tessera.test").await;
    let admin = s.token("admin@tessera.test").await;
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"].as_str().expect("listing").to_owned();
    let first = slot_in(&s, &provider, &listing, 20, 4, 5_000).await;
    let dearer = slot_in(&s, &provider, &listing, 21, 2, 8_000).await;
    let booking = paid(&s, &customer, &first, 2).await;

    // Declined: the move is abandoned, the held seats come back, the booking stays.
    let declined = move_dearer(
        &s,
        &customer,
        &booking,
        &dearer,
        Some("4000000000000002"),
        "up-0",
    )
    .await;
    assert_eq!(declined["move_status"], "abandoned", "{declined}");
    assert_eq!(declined["charge_minor"], 6_000, "2 seats × 30.00");
    remaining_becomes(&s, &listing, &dearer, 2).await;
    let d = eventually("the abandoned move in the history", || async {
        let (_, d) = s
            .get(&format!("/bookings/{booking}"), Some(&customer))
            .await;
        d["timeline"]
            .as_array()?
            .iter()
            .any(|e| e["event_type"] == "BookingMoveAbandoned")
            .then_some(d)
    })
    .await;
    assert_eq!(d["booking"]["slot_id"], first.as_str(), "{d}");

    // Paid: moved in one step once the top-up succeeds; a retry answers the same.
    let moved = move_dearer(&s, &customer, &booking, &dearer, None, "up-1").await;
    assert_eq!(moved["move_status"], "moved", "{moved}");
    assert_eq!(
        (moved["charge_minor"].as_i64(), moved["currency"].as_str()),
        (Some(6_000), Some("EUR"))
    );
    let again = move_dearer(&s, &customer, &booking, &dearer, None, "up-1").await;
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(again["payment_id"], moved["payment_id"]);
    let detail = eventually("the booking on the dearer slot, paid twice", || async {
        let (_, d) = s
            .get(&format!("/bookings/{booking}"), Some(&customer))
            .await;
        (d["booking"]["slot_id"] == dearer.as_str() && d["booking"]["paid_minor"] == 16_000)
            .then_some(d)
    })
    .await;
    assert_eq!(detail["booking"]["total_minor"], 16_000, "{detail}");
    let types: Vec<&str> = detail["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .filter(|t| t.starts_with("BookingMove") || *t == "BookingRescheduled")
        .collect();
    assert_eq!(
        types,
        [
            "BookingMoveRequested",
            "BookingMoveAbandoned",
            "BookingMoveRequested",
            "BookingRescheduled"
        ],
        "history shows the move and the one that failed"
    );
    remaining_becomes(&s, &listing, &first, 4).await;
    remaining_becomes(&s, &listing, &dearer, 0).await;

    // The customer is told what was charged.
    let told = eventually("the move message", || async {
        let (_, list) = s
            .get(
                &format!("/admin/outbox?template=booking_rescheduled&booking_id={booking}"),
                Some(&admin),
            )
            .await;
        list.as_array().and_then(|l| l.first().cloned())
    })
    .await;
    let id = told["id"].as_str().expect("id");
    let path = s.mail_dir().join(format!("{id}.eml"));
    let text = eventually("the move message is delivered", || async {
        std::fs::read_to_string(&path).ok()
    })
    .await
    .replace("=\r\n", "");
    assert!(text.contains("we charged the difference"), "{text}");

    // Cancelled by the customer, far ahead: both payments come back, and the books balance.
    let (status, cancelled) = s
        .post(
            &format!("/bookings/{booking}/cancel"),
            Some(&customer),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let refunded = eventually("both payments refunded", || async {
        let (_, d) = s
            .get(&format!("/bookings/{booking}"), Some(&customer))
            .await;
        // Two projections (bookings, payments) each catch up on their own.
        let paid_back = d["payments"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| p["refunded_minor"] == p["charged_minor"]));
        (d["booking"]["status"] == "refunded" && paid_back).then_some(d)
    })
    .await;
    assert_eq!(refunded["booking"]["refunded_minor"], 16_000, "{refunded}");
    let payments = refunded["payments"].as_array().expect("payments");
    let settled: Vec<(i64, i64)> = payments
        .iter()
        .filter(|p| p["charged_minor"].as_i64().unwrap_or(0) > 0)
        .map(|p| {
            (
                p["charged_minor"].as_i64().unwrap_or(0),
                p["refunded_minor"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert!(
        settled.contains(&(10_000, 10_000)) && settled.contains(&(6_000, 6_000)),
        "{refunded:#}"
    );
    remaining_becomes(&s, &listing, &dearer, 2).await;
    let ledger = eventually("the ledger clean", || async {
        let (_, r) = s.get("/admin/ledger/check", Some(&admin)).await;
        (r["clean"] == true).then_some(r)
    })
    .await;
    assert_eq!(ledger["violations"], json!([]), "{ledger:#}");
    s.shutdown().await;
}

/// With Stripe, the move waits for the top-up's webhook: meanwhile the new slot holds the
/// seats and another move is refused. A withdrawn move gives the seats back and its top-up is
/// canceled at Stripe; the signed `payment_intent.succeeded` of the next one moves the booking,
/// and the books reconcile with Stripe's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stripe_a_dearer_move_completes_when_its_top_up_webhook_arrives() {
    use super::money::{SECRET, webhook};
    use tessera_commands::fake_stripe;
    let (stripe_url, fake) = fake_stripe::start().await;
    let s = Server::start(Options {
        stripe: Some(tessera_api::startup::StripeConfig {
            secret_key: "sk_test_moves".into(),
            webhook_secret: SECRET.into(),
            api_base: Some(stripe_url),
        }),
        config: None,
        fixtures: None,
    })
    .await;
    let provider = s.token("provider@tessera.test").await;
    let customer = s.token("customer@tessera.test").await;
    let admin = s.token("admin@tessera.test").await;
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"].as_str().expect("listing").to_owned();
    let first = slot_in(&s, &provider, &listing, 20, 4, 5_000).await;
    let dearer = slot_in(&s, &provider, &listing, 21, 4, 7_000).await;
    let other = slot_in(&s, &provider, &listing, 22, 4, 9_000).await;
    // The customer's browser completes the intent at Stripe; Stripe's webhook tells us.
    let succeeded = |event: &str, started: &Value| {
        let intent = started["provider_ref"].as_str().expect("pi");
        let amount = fake_stripe::succeed(&fake, intent);
        fake_stripe::webhook_payload(
            event,
            "payment_intent.succeeded",
            intent,
            tessera_domain::values::PaymentId(
                started["payment_id"]
                    .as_str()
                    .and_then(|p| p.parse().ok())
                    .expect("payment id"),
            ),
            amount,
        )
    };

    let (status, placed) = place(&s, &customer, &first, 1).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let booking = placed["booking_id"].as_str().expect("booking").to_owned();
    let (status, started) = s
        .post(
            &format!("/bookings/{booking}/pay"),
            Some(&customer),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let (status, body) = webhook(&s, &succeeded("evt_move_pay", &started)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The move waits for its top-up, with what the browser needs to confirm it.
    let waiting = move_dearer(&s, &customer, &booking, &dearer, None, "stripe-up").await;
    assert_eq!(waiting["move_status"], "awaiting_payment", "{waiting}");
    assert_eq!(waiting["provider"], "stripe");
    assert_eq!(waiting["charge_minor"], 2_000);
    assert!(
        waiting["client_secret"]
            .as_str()
            .is_some_and(|c| c.contains("_secret_")),
        "{waiting}"
    );
    remaining_becomes(&s, &listing, &dearer, 3).await;
    let d = eventually("the booking shows the waiting move", || async {
        let (_, d) = s
            .get(&format!("/bookings/{booking}"), Some(&customer))
            .await;
        (d["booking"]["move_to_slot_id"] == dearer.as_str()).then_some(d)
    })
    .await;
    assert_eq!(
        (
            d["booking"]["move_charge_minor"].as_i64(),
            d["booking"]["move_payment_id"].as_str(),
            d["booking"]["slot_id"].as_str()
        ),
        (
            Some(2_000),
            waiting["payment_id"].as_str(),
            Some(first.as_str())
        ),
        "{d}"
    );
    let (status, headers, body) = reschedule(&s, &customer, &booking, &other, "stripe-2").await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "booking.move_pending",
    );

    // Withdrawn: the seats come back; there is nothing left to withdraw.
    let move_path = format!("/bookings/{booking}/move");
    let withdraw = || s.call(Method::DELETE, &move_path, Some(&customer), None, &[]);
    let (status, _, body) = withdraw().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    remaining_becomes(&s, &listing, &dearer, 4).await;
    eventually("the booking shows no waiting move", || async {
        let (_, d) = s
            .get(&format!("/bookings/{booking}"), Some(&customer))
            .await;
        d["booking"]["move_to_slot_id"].is_null().then_some(())
    })
    .await;
    let (status, headers, body) = withdraw().await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "booking.no_pending_move",
    );

    // Nobody can pay the withdrawn top-up any more: it is canceled at Stripe, and failed here.
    let stale_ref = waiting["provider_ref"].as_str().expect("pi").to_owned();
    let stale_id = waiting["payment_id"].clone();
    eventually("the withdrawn top-up canceled at Stripe", || async {
        let canceled = fake.lock().expect("fake").objects.iter().any(|o| {
            o["id"] == stale_ref.as_str()
                && o["status"] == "canceled"
                && o["cancellation_reason"] == "abandoned"
        });
        canceled.then_some(())
    })
    .await;
    eventually("the withdrawn top-up failed", || async {
        let (_, d) = s
            .get(&format!("/bookings/{booking}"), Some(&customer))
            .await;
        d["payments"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["payment_id"] == stale_id && p["status"] == "failed")
            .map(|_| ())
    })
    .await;
    // Stripe's own report of the cancellation (twice) is acknowledged and changes nothing.
    let canceled = fake_stripe::webhook_payload(
        "evt_move_canceled",
        "payment_intent.canceled",
        &stale_ref,
        tessera_domain::values::PaymentId(
            stale_id
                .as_str()
                .and_then(|p| p.parse().ok())
                .expect("payment id"),
        ),
        2_000,
    );
    for _ in 0..2 {
        let (status, body) = webhook(&s, &canceled).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, d) = s
        .get(&format!("/bookings/{booking}"), Some(&customer))
        .await;
    assert_eq!(d["booking"]["slot_id"], first.as_str(), "{d}");

    // Asked again and paid: Stripe reports the top-up (twice), and the booking moves once.
    let waiting = move_dearer(&s, &customer, &booking, &dearer, None, "stripe-up-2").await;
    assert_eq!(waiting["move_status"], "awaiting_payment", "{waiting}");
    let paid_up = succeeded("evt_move_top_up", &waiting);
    for _ in 0..2 {
        let (status, body) = webhook(&s, &paid_up).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let detail = eventually("moved by the top-up's webhook", || async {
        let (_, d) = s
            .get(&format!("/bookings/{booking}"), Some(&customer))
            .await;
        (d["booking"]["slot_id"] == dearer.as_str()).then_some(d)
    })
    .await;
    assert_eq!(
        (
            detail["booking"]["paid_minor"].as_i64(),
            detail["booking"]["total_minor"].as_i64()
        ),
        (Some(7_000), Some(7_000)),
        "{detail}"
    );
    remaining_becomes(&s, &listing, &first, 4).await;
    remaining_becomes(&s, &listing, &dearer, 3).await;
    let ledger = eventually("the ledger clean and reconciled", || async {
        let (_, r) = s.get("/admin/ledger/check", Some(&admin)).await;
        (r["clean"] == true).then_some(r)
    })
    .await;
    assert_eq!(ledger["violations"], json!([]), "{ledger:#}");
    s.shutdown().await;
}
