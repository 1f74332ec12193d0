//! Money to providers over HTTP, through the real `async-stripe` client and the fake Stripe
//! server: a provider onboards (Express account, onboarding link, `account.updated` webhooks
//! delivered twice and out of order), a customer pays, the slot ends, the dispute window
//! passes, exactly 85 % is transferred from the charge, an admin's partial refund after the
//! release reverses the provider's part of it, and the ledger check reconciles with Stripe's
//! records at every step. The customer's receipt and credit note (JSON and PDF), Stripe's
//! payouts (paid, failed, delivered twice and out of order), a refund before the release and a
//! provider's slot cancellation (nothing transferred) close the loop.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_api::startup::StripeConfig;
use tessera_commands::fake_stripe;
use tessera_domain::payment::share_of;

use super::{Options, Server, eventually};

pub(super) const SECRET: &str = "whsec_money_e2e";

pub(super) async fn webhook(s: &Server, payload: &str) -> (StatusCode, Value) {
    let signature = fake_stripe::signature(payload, SECRET, chrono::Utc::now().timestamp());
    let response = s
        .client
        .post(s.api("/payments/stripe/webhook"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(payload.to_owned())
        .send()
        .await
        .expect("webhook");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn ledger(s: &Server, admin: &str) -> Value {
    let (status, report) = s.get("/admin/ledger/check", Some(admin)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

fn balance(report: &Value, account: &str) -> i64 {
    report["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .filter(|b| b["account"] == account)
        .filter_map(|b| b["amount_minor"].as_i64())
        .sum()
}

fn transfers_of(fake: &fake_stripe::Shared, group: &str) -> Vec<Value> {
    fake.lock()
        .expect("fake")
        .objects
        .iter()
        .filter(|o| o["object"] == "transfer" && o["transfer_group"] == group)
        .cloned()
        .collect()
}

#[tokio::test]
async fn providers_are_onboarded_paid_their_share_and_the_books_reconcile_with_stripe() {
    let (stripe_url, fake) = fake_stripe::start().await;
    let s = Server::start(Options {
        stripe: Some(StripeConfig {
            secret_key: "sk_test_money".into(),
            webhook_secret: SECRET.into(),
            api_base: Some(stripe_url),
        }),
        config: Some(tessera_api::http::ApiConfig {
            // Released as soon as the slot ends (the window is a setting; 48 h by default).
            dispute_window: Duration::ZERO,
            commands_per_second: 10_000,
            ..Default::default()
        }),
        fixtures: None,
    })
    .await;
    let provider = s.token("provider@tessera.test").await;
    let customer = s.token("customer@tessera.test").await;
    let admin = s.token("admin@tessera.test").await;
    let (_, me) = s.get("/me", Some(&provider)).await;
    let provider_id = me["user_id"].as_str().expect("id").to_owned();

    // Before onboarding: default terms, no account. The books of the fixtures' history (paid
    // through the simulated gateway) are clean, and nothing is at Stripe yet.
    let (status, account) = s.get("/provider/payout-account", Some(&provider)).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert_eq!(account["commission_bp"], 1500);
    assert_eq!(account["status"], Value::Null);
    let before = ledger(&s, &admin).await;
    assert_eq!(before["clean"], true, "{before:#}");

    // Onboarding: an Express account and a link; asked again, the same account, a fresh link.
    let (status, opened) = s
        .post("/provider/payout-account", Some(&provider), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{opened}");
    assert_eq!(opened["status"], "onboarding");
    assert_eq!(opened["gateway"], "stripe");
    let account_ref = opened["account_ref"].as_str().expect("acct").to_owned();
    assert!(account_ref.starts_with("acct_"));
    let link = opened["onboarding_url"].as_str().expect("link").to_owned();
    assert!(link.starts_with("https://connect.stripe.test/"), "{link}");
    let (_, again) = s
        .post("/provider/payout-account", Some(&provider), json!({}))
        .await;
    assert_eq!(again["account_ref"], account_ref.as_str());
    assert_ne!(
        again["onboarding_url"],
        link.as_str(),
        "links expire: a new one"
    );
    assert_eq!(
        fake.lock()
            .expect("fake")
            .objects
            .iter()
            .filter(|o| o["object"] == "account")
            .count(),
        1,
        "one connected account"
    );

    // The provider finishes at Stripe. A "restricted" event arrives late, after the activation,
    // and the activation is delivered twice: the account as Stripe has it now decides.
    let stale = fake_stripe::onboard(&fake, &account_ref, "evt_acct_stale", false);
    let active = fake_stripe::onboard(&fake, &account_ref, "evt_acct_active", true);
    for payload in [&active, &active, &stale] {
        let (status, body) = webhook(&s, payload).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, account) = s.get("/provider/payout-account", Some(&provider)).await;
    assert_eq!(account["status"], "active", "{account}");

    // A slot of the provider's that ends a few seconds from now.
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"].as_str().expect("listing").to_owned();
    let starts = chrono::Utc::now() + chrono::TimeDelta::seconds(20);
    let (status, slot) = s
        .post(
            &format!("/provider/listings/{listing}/slots"),
            Some(&provider),
            json!({ "starts_at": starts.to_rfc3339(), "ends_at": (starts + chrono::TimeDelta::seconds(1)).to_rfc3339(), "capacity": 4 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{slot}");
    let slot = slot["slot_id"].as_str().expect("slot").to_owned();
    let (status, _, placed) = s
        .call(
            Method::POST,
            "/bookings",
            Some(&customer),
            Some(json!({ "slot_id": slot, "seats": 2 })),
            &[("idempotency-key", "money-e2e-1".into())],
        )
        .await;
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
    let intent = started["provider_ref"].as_str().expect("pi").to_owned();
    let payment_id = started["payment_id"].as_str().expect("payment").to_owned();
    // The customer's browser completes the payment; Stripe tells us (twice).
    let total = fake_stripe::succeed(&fake, &intent);
    let paid = fake_stripe::webhook_payload(
        "evt_pi_money",
        "payment_intent.succeeded",
        &intent,
        tessera_domain::values::PaymentId(payment_id.parse().expect("uuid")),
        total,
    );
    for _ in 0..2 {
        let (status, body) = webhook(&s, &paid).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    eventually("confirmed", || async {
        let (_, d) = s
            .get(&format!("/bookings/{booking}"), Some(&customer))
            .await;
        (d["booking"]["status"] == "confirmed").then_some(())
    })
    .await;
    let held = ledger(&s, &admin).await;
    assert_eq!(held["clean"], true, "{held:#}");
    // (The fixtures' history, paid through the simulated gateway, may still owe the provider:
    // that money is not at Stripe and stays owed; its releases may fire meanwhile. So the
    // amounts below are checked where they are exact, at Stripe, and the books by the check.)
    assert!(
        transfers_of(&fake, &booking).is_empty(),
        "held until the slot ends"
    );

    // The slot ends, the (zero) window passes: exactly 85 % goes out, drawn on the charge.
    let transfer = eventually("the provider's share transferred", || async {
        transfers_of(&fake, &booking).pop()
    })
    .await;
    let share = share_of(total, 1500);
    assert_eq!(transfer["amount"], share, "{transfer}");
    assert_eq!(share, total * 85 / 100);
    assert_eq!(transfer["destination"], account_ref.as_str());
    assert_eq!(
        transfer["source_transaction"],
        format!("ch_{}", &intent[3..]).as_str()
    );
    let released = eventually(
        "the release and transfer posted, the ledger clean",
        || async {
            let r = ledger(&s, &admin).await;
            (r["postings"].as_i64() >= held["postings"].as_i64().map(|p| p + 2)
                && r["clean"] == true)
                .then_some(r)
        },
    )
    .await;
    assert!(
        balance(&released, "commission_revenue")
            <= balance(&held, "commission_revenue") - (total - share)
    );

    // An admin refunds half after the release: the provider gives back its part of it first.
    let half = total / 2;
    let (status, _, refunded) = s
        .call(
            Method::POST,
            &format!("/admin/bookings/{booking}/refund"),
            Some(&admin),
            Some(json!({ "amount_minor": half, "reason": "half the tour was cancelled" })),
            &[("idempotency-key", "money-e2e-refund".into())],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    let reversed = eventually("the provider's part reversed", || async {
        let t = transfers_of(&fake, &booking).pop()?;
        (t["amount_reversed"].as_i64() > Some(0)).then_some(t)
    })
    .await;
    assert_eq!(
        reversed["amount_reversed"],
        share - share_of(total - half, 1500)
    );
    let after = eventually("the refund recorded and the ledger clean", || async {
        let r = ledger(&s, &admin).await;
        let refunds: i64 = fake
            .lock()
            .expect("fake")
            .objects
            .iter()
            .filter(|o| o["object"] == "refund" && o["payment_intent"] == intent.as_str())
            .filter_map(|o| o["amount"].as_i64())
            .sum();
        (refunds == half && r["clean"] == true && r["postings"] != released["postings"])
            .then_some(r)
    })
    .await;
    assert_eq!(after["violations"], json!([]), "{after:#}");
    assert_eq!(after["differences"], json!([]), "{after:#}");

    // The provider's statement for the period: this booking's release, transfer, refund and
    // reversal, and totals that add up; the same as CSV, and for admins.
    let today = chrono::Utc::now().date_naive();
    let period = format!(
        "from={}&to={}",
        today - chrono::TimeDelta::days(1),
        today + chrono::TimeDelta::days(1)
    );
    // (The read model follows the log: wait for it to hold the refund.)
    let statement = eventually("the statement holds the refund", || async {
        let (status, st) = s
            .get(&format!("/provider/statement?{period}"), Some(&provider))
            .await;
        assert_eq!(status, StatusCode::OK, "{st}");
        let n = st["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter(|l| l["booking_id"] == booking.as_str())
            .count();
        (n == 4).then_some(st)
    })
    .await;
    let lines: Vec<&Value> = statement["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter(|l| l["booking_id"] == booking.as_str())
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["release", "transfer", "reversal", "refund"],
        "{statement:#}"
    );
    assert_eq!(lines[0]["bookings_minor"], total);
    assert_eq!(lines[0]["commission_minor"], total - share);
    assert_eq!(lines[0]["owed_minor"], share);
    assert_eq!(lines[1]["owed_minor"], -share);
    let eur = statement["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .find(|t| t["currency"] == "EUR")
        .expect("EUR");
    let n = |k: &str| eur[k].as_i64().expect(k);
    assert_eq!(
        n("closing_minor"),
        n("opening_minor") + n("bookings_minor")
            - n("commission_minor")
            - n("refunds_minor")
            - n("transferred_minor"),
        "{statement:#}"
    );
    let (status, headers, _) = s
        .call(
            Method::GET,
            &format!("/provider/statement?{period}&format=csv"),
            Some(&provider),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/csv")),
        "{headers:?}"
    );
    let csv = s
        .client
        .get(s.api(&format!("/provider/statement?{period}&format=csv")))
        .bearer_auth(&provider)
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("text");
    assert!(csv.starts_with("line,at,kind,booking_id"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("posting,") && l.contains(&booking) && l.contains(",release,")),
        "{csv}"
    );
    let (status, for_admin) = s
        .get(
            &format!("/admin/providers/{provider_id}/statement?{period}"),
            Some(&admin),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{for_admin}");
    // (Totals may move meanwhile: the fixtures' own releases keep firing. This booking's lines
    // do not.)
    let admin_lines: Vec<&Value> = for_admin["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter(|l| l["booking_id"] == booking.as_str())
        .collect();
    assert_eq!(admin_lines, lines);

    // Commission is set per provider by admins, with a reason; a non-provider is not found.
    let (status, _, set) = s
        .call(
            Method::PUT,
            &format!("/admin/providers/{provider_id}/commission"),
            Some(&admin),
            Some(json!({ "commission_bp": 1200, "reason": "volume agreement" })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let (_, account) = s.get("/provider/payout-account", Some(&provider)).await;
    assert_eq!(account["commission_bp"], 1200);
    let (status, _, bad) = s
        .call(
            Method::PUT,
            &format!("/admin/providers/{provider_id}/commission"),
            Some(&admin),
            Some(json!({ "commission_bp": 9000, "reason": "typo" })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (_, customer_me) = s.get("/me", Some(&customer)).await;
    let (status, _, not_provider) = s
        .call(
            Method::PUT,
            &format!(
                "/admin/providers/{}/commission",
                customer_me["user_id"].as_str().expect("id")
            ),
            Some(&admin),
            Some(json!({ "commission_bp": 1000, "reason": "x" })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{not_provider}");

    documents(&s, &customer, &admin, &booking, total, half).await;
    payouts(&s, &fake, &provider, &admin, &provider_id, &account_ref).await;
    invoices(&s, &provider, &admin, &provider_id).await;
    nothing_transferred_when_refunded_before_release(
        &s, &fake, &provider, &customer, &admin, &listing,
    )
    .await;
    s.shutdown().await;
}

/// The customer's receipt (the payment) and credit note (the half refund), as JSON and PDF.
async fn documents(s: &Server, customer: &str, admin: &str, booking: &str, total: i64, half: i64) {
    let receipt = eventually("the receipt and its credit note", || async {
        let (status, r) = s
            .get(&format!("/bookings/{booking}/receipt"), Some(customer))
            .await;
        (status == StatusCode::OK && r["credit_notes"].as_array().is_some_and(|c| c.len() == 1))
            .then_some(r)
    })
    .await;
    let r = &receipt["receipt"];
    let number = r["number"].as_str().expect("number").to_owned();
    assert!(
        number.starts_with(&format!("{}-", chrono::Utc::now().format("%Y"))),
        "{number}"
    );
    assert_eq!(r["amount_minor"], total);
    let rate = u32::try_from(r["tax_rate_bp"].as_i64().expect("rate")).expect("rate");
    assert_eq!(
        r["tax_minor"],
        tessera_domain::receipt::tax_included(total, rate)
    );
    let note = &receipt["credit_notes"][0];
    assert!(
        note["number"]
            .as_str()
            .is_some_and(|n| n.starts_with("CN-")),
        "{note}"
    );
    assert_eq!(note["receipt_number"], number.as_str());
    assert_eq!(note["amount_minor"], half);
    let (status, _) = s
        .get(&format!("/bookings/{booking}/receipt"), Some(admin))
        .await;
    assert_eq!(status, StatusCode::OK);
    let stranger = s.token("customer1@tessera.test").await;
    let (status, hidden) = s
        .get(&format!("/bookings/{booking}/receipt"), Some(&stranger))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{hidden}");

    let response = s
        .client
        .get(s.api(&format!("/bookings/{booking}/receipt?format=pdf")))
        .bearer_auth(customer)
        .send()
        .await
        .expect("pdf");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    let pdf = response.bytes().await.expect("bytes");
    let text = tessera_api::http::pdf::text_of(&pdf).expect("a PDF with text");
    let money = tessera_api::http::routes::documents::amount;
    for expected in [
        format!("Receipt {number}"),
        format!("Booking {booking}"),
        format!("Paid: {}", money(total, "EUR")),
        format!(
            "Tax included (10.00 %): {}",
            money(tessera_domain::receipt::tax_included(total, rate), "EUR")
        ),
        format!("Credit note {}", note["number"].as_str().expect("cn")),
        format!("corrects receipt {number}"),
        format!("Refunded: {}", money(half, "EUR")),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in {text}");
    }
}

/// The provider's monthly commission invoices (the fixtures' history spans two months, each
/// invoiced on the first of the next), as JSON and PDF, for the provider and the admins.
async fn invoices(s: &Server, provider: &str, admin: &str, provider_id: &str) {
    let (status, list) = s.get("/provider/invoices", Some(provider)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let first = list
        .as_array()
        .and_then(|l| l.first())
        .cloned()
        .unwrap_or_else(|| panic!("the fixtures' history invoices the demo provider: {list}"));
    let number = first["number"].as_str().expect("number").to_owned();
    assert!(number.starts_with("INV-"), "{number}");
    let month = first["month"].as_str().expect("month").to_owned();
    let commission = first["lines"][0]["commission_minor"]
        .as_i64()
        .expect("commission");
    let (status, for_admin) = s
        .get(
            &format!("/admin/providers/{provider_id}/invoices"),
            Some(admin),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(for_admin, list);
    let response = s
        .client
        .get(s.api(&format!("/provider/invoices/{number}?format=pdf")))
        .bearer_auth(provider)
        .send()
        .await
        .expect("pdf");
    assert_eq!(response.status(), StatusCode::OK);
    let text = tessera_api::http::pdf::text_of(&response.bytes().await.expect("bytes"))
        .expect("a PDF with text");
    for expected in [
        format!("Commission invoice {number}"),
        format!("Commission for {month}"),
        format!(
            "Commission: {}",
            tessera_api::http::routes::documents::amount(commission, "EUR")
        ),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in {text}");
    }
    let (status, missing) = s
        .get("/provider/invoices/INV-1999-000001", Some(provider))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
}

/// Stripe pays out of the connected account: a payout delivered twice is recorded once; a
/// failed one reported before its stale "paid" stays failed, visible to the provider and the
/// admins; the books still reconcile (payouts included).
async fn payouts(
    s: &Server,
    fake: &fake_stripe::Shared,
    provider: &str,
    admin: &str,
    provider_id: &str,
    account: &str,
) {
    let paid = fake_stripe::payout(fake, account, "po_e2e_1", "evt_po_1_paid", 5_000, "paid");
    let stale = fake_stripe::payout(fake, account, "po_e2e_2", "evt_po_2_paid", 2_000, "paid");
    let failed = fake_stripe::payout(
        fake,
        account,
        "po_e2e_2",
        "evt_po_2_failed",
        2_000,
        "failed",
    );
    for payload in [&paid, &paid, &failed, &stale] {
        let (status, body) = webhook(s, payload).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let list = eventually("both payouts listed", || async {
        let (status, list) = s.get("/provider/payouts", Some(provider)).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        (list.as_array().is_some_and(|l| l.len() == 2)).then_some(list)
    })
    .await;
    let by_ref = |r: &str| {
        list.as_array()
            .expect("list")
            .iter()
            .find(|p| p["payout_ref"] == r)
            .cloned()
            .expect(r)
    };
    assert_eq!(by_ref("po_e2e_1")["status"], "paid");
    assert_eq!(by_ref("po_e2e_1")["amount_minor"], 5_000);
    assert_eq!(by_ref("po_e2e_2")["status"], "failed");
    assert_eq!(by_ref("po_e2e_2")["failure"], "account_closed");
    let (status, for_admin) = s
        .get(
            &format!("/admin/providers/{provider_id}/payouts"),
            Some(admin),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(for_admin, list);
    let (status, _) = s.get("/provider/payouts", Some(admin)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let report = ledger(s, admin).await;
    assert_eq!(report["differences"], json!([]), "{report:#}");
    // Stripe's book and the log disagree the moment a payout is unknown to the log.
    let unknown = fake_stripe::payout(fake, account, "po_e2e_3", "evt_po_3", 700, "paid");
    let report = ledger(s, admin).await;
    assert_eq!(
        report["differences"],
        json!([format!(
            "payout po_e2e_3 of {account}: the gateway has 700 paid, the log has no such payout"
        )]),
        "{report:#}"
    );
    let (status, body) = webhook(s, &unknown).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually("the third payout reconciled", || async {
        (ledger(s, admin).await["differences"] == json!([])).then_some(())
    })
    .await;
}

/// A booking refunded before its slot ended, and one whose slot the provider cancelled: the
/// refunds come out of the held money, nothing is transferred, each gets its credit note.
async fn nothing_transferred_when_refunded_before_release(
    s: &Server,
    fake: &fake_stripe::Shared,
    provider: &str,
    customer: &str,
    admin: &str,
    listing: &str,
) {
    let mut bookings = Vec::new();
    for (i, days) in [(0, 30), (1, 31)] {
        let starts = chrono::Utc::now() + chrono::TimeDelta::days(days);
        let (status, slot) = s
            .post(
                &format!("/provider/listings/{listing}/slots"),
                Some(provider),
                json!({ "starts_at": starts.to_rfc3339(), "ends_at": (starts + chrono::TimeDelta::hours(2)).to_rfc3339(), "capacity": 4 }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{slot}");
        let slot = slot["slot_id"].as_str().expect("slot").to_owned();
        let (status, _, placed) = s
            .call(
                Method::POST,
                "/bookings",
                Some(customer),
                Some(json!({ "slot_id": slot, "seats": 1 })),
                &[("idempotency-key", format!("money-e2e-early-{i}"))],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{placed}");
        let booking = placed["booking_id"].as_str().expect("booking").to_owned();
        let (_, started) = s
            .post(
                &format!("/bookings/{booking}/pay"),
                Some(customer),
                json!({}),
            )
            .await;
        let intent = started["provider_ref"].as_str().expect("pi").to_owned();
        let total = fake_stripe::succeed(fake, &intent);
        let payload = fake_stripe::webhook_payload(
            &format!("evt_pi_early_{i}"),
            "payment_intent.succeeded",
            &intent,
            tessera_domain::values::PaymentId(
                started["payment_id"]
                    .as_str()
                    .expect("payment")
                    .parse()
                    .expect("uuid"),
            ),
            total,
        );
        let (status, body) = webhook(s, &payload).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        eventually("confirmed", || async {
            let (_, d) = s.get(&format!("/bookings/{booking}"), Some(customer)).await;
            (d["booking"]["status"] == "confirmed").then_some(())
        })
        .await;
        bookings.push((booking, slot, intent, total));
    }
    // The customer cancels the first a month ahead (all back); the provider cancels the
    // second's slot (all back).
    let (status, body) = s
        .post(
            &format!("/bookings/{}/cancel", bookings[0].0),
            Some(customer),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = s
        .call(
            Method::POST,
            &format!("/provider/slots/{}/cancel", bookings[1].1),
            Some(provider),
            Some(json!({ "reason": "the boat is broken" })),
            &[("idempotency-key", "money-e2e-cancel-slot".into())],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (booking, _, intent, total) in &bookings {
        let receipt = eventually("refunded in full, with a credit note", || async {
            let refunded: i64 = fake
                .lock()
                .expect("fake")
                .objects
                .iter()
                .filter(|o| o["object"] == "refund" && o["payment_intent"] == intent.as_str())
                .filter_map(|o| o["amount"].as_i64())
                .sum();
            let (status, r) = s
                .get(&format!("/bookings/{booking}/receipt"), Some(customer))
                .await;
            (refunded == *total
                && status == StatusCode::OK
                && r["credit_notes"].as_array().is_some_and(|c| c.len() == 1))
            .then_some(r)
        })
        .await;
        assert_eq!(receipt["credit_notes"][0]["amount_minor"], *total);
        assert!(
            transfers_of(fake, booking).is_empty(),
            "nothing transferred for {booking}"
        );
    }
    let report = eventually("the books clean after the refunds", || async {
        let r = ledger(s, admin).await;
        (r["clean"] == true).then_some(r)
    })
    .await;
    assert_eq!(report["documents"]["findings"], json!([]), "{report:#}");
}
