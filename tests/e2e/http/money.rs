//! Money to providers over HTTP, through the real `async-stripe` client and the fake Stripe
//! server: a provider onboards (Express account, onboarding link, `account.updated` webhooks
//! delivered twice and out of order), a customer pays, the slot ends, the dispute window
//! passes, exactly 85 % is transferred from the charge, an admin's partial refund after the
//! release reverses the provider's part of it, and the ledger check reconciles with Stripe's
//! records at every step.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_api::startup::StripeConfig;
use tessera_commands::fake_stripe;
use tessera_domain::payment::share_of;

use super::{Options, Server, eventually};

const SECRET: &str = "whsec_money_e2e";

async fn webhook(s: &Server, payload: &str) -> (StatusCode, Value) {
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
    s.shutdown().await;
}
