//! Messages through a real SMTP server process, and what the outbox does around them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tessera_notify::delivery::Pass;
use tessera_notify::message::{self, Envelope};
use tessera_notify::outbox::{Change, NewMessage};
use tessera_notify::templates::Rendered;
use tessera_notify::{MailDir, Smtp};
use tokio::io::AsyncBufReadExt;

use super::*;

/// aiosmtpd on a port of its own, writing what it accepts into a directory; stopped on drop.
struct SmtpServer {
    child: tokio::process::Child,
    port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl SmtpServer {
    async fn start(port: u16, dir: &Path) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/smtp/sink.py");
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| {
                std::process::Command::new(p)
                    .args(["-c", "import aiosmtpd"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("python3 with aiosmtpd (apt-get install python3-aiosmtpd; .ci/run does)");
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(dir)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the SMTP server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the SMTP server starts within 30 s")
            .expect("its output");
        assert_eq!(ready.as_deref(), Some("ready"));
        Self {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    async fn stop(mut self) {
        self.child.kill().await.expect("stop");
    }

    /// What the server accepted: (envelope recipients, the message's text).
    fn received(&self) -> Vec<(Vec<String>, String)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|json| {
                let envelope: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("json");
                let eml = std::fs::read_to_string(json.with_extension("eml")).expect("eml");
                let to = envelope["rcpt_tos"]
                    .as_array()
                    .expect("rcpt")
                    .iter()
                    .map(|v| v.as_str().expect("address").to_owned())
                    .collect();
                (to, eml)
            })
            .collect()
    }
}

/// The header `name` of a raw message (unfolded).
fn header(eml: &str, name: &str) -> Option<String> {
    let head = eml.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    })
}

/// Decoded subject (lettre encodes non-ASCII subjects; ours here are ASCII).
fn subject(eml: &str) -> String {
    header(eml, "Subject").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_booking_tells_customer_and_provider_over_smtp_and_a_replay_sends_nothing() {
    let mut w = World::new().await;
    let booking = w.place(2).await;
    assert_eq!(
        w.templates_with_status("pending").await,
        ["booking_placed", "hold_lapsing"],
        "held: how to pay, and a warning before the hold lapses"
    );
    w.pay(booking).await;
    assert_eq!(
        w.templates_with_status("pending").await,
        [
            "badge_unlocked",
            "booking_confirmed",
            "booking_placed",
            "points_earned",
            "provider_new_booking",
            "receipt",
            "reminder"
        ],
        "a first booking also earns points and a badge (optional messages; Ada did not opt out)"
    );
    let to_provider = w
        .messages()
        .await
        .into_iter()
        .find(|r| r.template == "provider_new_booking")
        .expect("provider told");
    assert_eq!(to_provider.recipient, w.provider.0);
    assert_eq!(
        w.templates_with_status("discarded").await,
        ["hold_lapsing"],
        "paid in time: no warning"
    );

    let dir = tempfile::tempdir().expect("dir");
    let server = SmtpServer::start(free_port(), dir.path()).await;
    let smtp = Arc::new(Smtp::from_url(&server.url()).expect("url"));
    let deliverer = w.deliverer(smtp, RetryPolicy::default());
    let pass = deliverer.deliver_due().await.expect("deliver");
    assert_eq!(
        pass,
        Pass {
            sent: 6,
            retrying: 0,
            dead: 0
        },
        "the reminder waits for its time"
    );
    let got = server.received();
    assert_eq!(got.len(), 6);
    let by_subject = |needle: &str| {
        got.iter()
            .find(|(_, eml)| subject(eml).contains(needle))
            .unwrap_or_else(|| panic!("no message about {needle:?} in {got:?}"))
            .clone()
    };
    let (to, placed) = by_subject("seats held until");
    assert_eq!(to, ["ada@example.org"]);
    assert!(placed.contains("Content-Type: multipart/alternative"));
    assert!(placed.contains("text/plain") && placed.contains("text/html"));
    let (to, confirmed) = by_subject("Confirmed: Sunrise kayak tour");
    assert_eq!(to, ["ada@example.org"]);
    assert!(confirmed.contains("multipart/mixed"));
    assert!(confirmed.contains("text/calendar"));
    assert!(confirmed.contains("booking.ics"));
    assert!(confirmed.contains("BEGIN:VEVENT"), "the calendar entry");
    assert!(confirmed.contains("DTSTART:20261220T100000Z"));
    assert!(confirmed.contains("Lisbon"));
    assert!(
        header(&confirmed, "List-Unsubscribe").is_none(),
        "transactional"
    );
    let (_, receipt) = by_subject("Receipt 2026-000001");
    assert!(receipt.contains("100.00"), "{receipt}");
    let (to, provider) = by_subject("New booking: 2 seat(s)");
    assert_eq!(to, ["kayaks@example.org"]);
    assert!(provider.contains("Ada"));
    let ids: std::collections::BTreeSet<_> = got
        .iter()
        .map(|(_, eml)| header(eml, "Message-ID").expect("Message-ID"))
        .collect();
    assert_eq!(ids.len(), 6);
    let (_, points) = by_subject("You earned");
    assert!(header(&points, "List-Unsubscribe").is_some(), "optional");

    // Every reactor rewound to position 0 (within the age limit): the same messages are
    // derived, none is new, nothing is sent again.
    let before = w.messages().await;
    w.replay_everything().await;
    let after = w.messages().await;
    assert_eq!(
        after.iter().map(|r| (r.id, &r.status)).collect::<Vec<_>>(),
        before.iter().map(|r| (r.id, &r.status)).collect::<Vec<_>>()
    );
    assert_eq!(
        deliverer.deliver_due().await.expect("deliver"),
        Pass::default()
    );
    assert_eq!(server.received().len(), 6, "nothing sent twice");

    // Addresses and messages are sealed with each recipient's key: no plaintext at rest.
    let plaintext: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE position(convert_to('ada@example.org', 'UTF8') in address) > 0
            OR position(convert_to('ada@example.org', 'UTF8') in message) > 0
            OR position(convert_to('Sunrise', 'UTF8') in message) > 0",
    )
    .fetch_one(w.pool())
    .await
    .expect("count");
    assert_eq!(plaintext, 0);
    let mut shown = w.messages().await;
    outbox::reveal(&w.vault, &mut shown).await.expect("reveal");
    assert!(
        shown
            .iter()
            .any(|r| r.address.as_deref() == Some("ada@example.org"))
    );

    // The reminder goes 24 h before the start.
    w.clock.set(t(19, 10));
    let pass = deliverer.deliver_due().await.expect("deliver");
    assert_eq!(pass.sent, 1);
    assert!(subject(&server.received()[6].1).contains("Tomorrow: Sunrise kayak tour"));
    server.stop().await;
}

async fn enqueue_direct(w: &World, to: &str) -> Uuid {
    let id = Uuid::new_v4();
    let words = Rendered {
        subject: format!("Hello {to}"),
        text: "Plain words.".into(),
        html: "<p>Plain words.</p>".into(),
    };
    let bytes = message::build(
        &Envelope {
            id,
            from: "Tessera <no-reply@tessera.test>",
            to_name: "",
            to_address: to,
            date: w.clock.now(),
            unsubscribe: None,
            calendar: None,
        },
        &words,
    )
    .expect("message");
    let seal = |purpose, plain| w.vault.seal_for(w.customer.0, purpose, plain);
    outbox::enqueue(
        w.pool(),
        &NewMessage {
            id,
            template: "password_reset".into(),
            recipient: w.customer.0,
            address: seal(outbox::ADDRESS, to.as_bytes())
                .await
                .expect("seal")
                .expect("key"),
            locale: "en".into(),
            marketing: false,
            booking_id: None,
            subject: words.subject,
            message: seal(outbox::MESSAGE, &bytes)
                .await
                .expect("seal")
                .expect("key"),
            event_position: 0,
            event_type: "test".into(),
            created_at: w.clock.now(),
            deliver_at: w.clock.now(),
        },
    )
    .await
    .expect("enqueue");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_retried_and_a_permanent_refusal_is_dead_lettered() {
    let w = World::new().await;
    let ok = enqueue_direct(&w, "ada@example.org").await;
    let refused = enqueue_direct(&w, "reject-me@example.org").await;
    let port = free_port();
    let smtp = Arc::new(Smtp::from_url(&format!("smtp://127.0.0.1:{port}")).expect("url"));
    let deliverer = w.deliverer(smtp, RetryPolicy::default());

    // Nobody listens: both fail for now and wait 15 to 30 s (the first backoff, jittered).
    let pass = deliverer.deliver_due().await.expect("deliver");
    assert_eq!(pass.retrying, 2);
    let row = outbox::get(w.pool(), ok).await.expect("get").expect("row");
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 1));
    assert!(row.last_error.is_some());
    let wait = row.next_attempt_at - w.clock.now();
    assert!(wait >= TimeDelta::seconds(15) && wait <= TimeDelta::seconds(30));
    assert_eq!(
        deliverer.deliver_due().await.expect("deliver"),
        Pass::default(),
        "not before the backoff ends"
    );

    // The server comes back.
    let dir = tempfile::tempdir().expect("dir");
    let server = SmtpServer::start(port, dir.path()).await;
    w.advance(TimeDelta::seconds(31));
    let pass = deliverer.deliver_due().await.expect("deliver");
    assert_eq!((pass.sent, pass.dead), (1, 1));
    assert_eq!(server.received().len(), 1);
    assert_eq!(server.received()[0].0, ["ada@example.org"]);
    let dead = outbox::get(w.pool(), refused)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(dead.status, "dead", "550 is final");
    assert!(dead.last_error.as_deref().unwrap_or("").contains("550"));

    // Admins see it, retry it (it is refused again) and discard it.
    let listed = outbox::list(
        w.pool(),
        &outbox::Filter {
            status: Some("dead".into()),
            limit: 10,
            ..outbox::Filter::default()
        },
    )
    .await
    .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        outbox::retry(w.pool(), refused, w.clock.now(), "admin:x: address fixed")
            .await
            .expect("retry"),
        Change::Done
    );
    assert_eq!(deliverer.deliver_due().await.expect("deliver").dead, 1);
    assert_eq!(
        outbox::discard(w.pool(), refused, "admin:x: gave up")
            .await
            .expect("discard"),
        Change::Done
    );
    assert_eq!(
        outbox::discard(w.pool(), ok, "admin:x: too late")
            .await
            .expect("discard"),
        Change::NotAllowed,
        "a sent message stays sent"
    );
    assert_eq!(
        outbox::retry(w.pool(), Uuid::new_v4(), w.clock.now(), "x")
            .await
            .expect("retry"),
        Change::NotFound
    );
    server.stop().await;

    // A server down for longer than the attempts allow: dead letter after the last one.
    let lost = enqueue_direct(&w, "ada@example.org").await;
    let short = w.deliverer(
        Arc::new(Smtp::from_url(&format!("smtp://127.0.0.1:{}", free_port())).expect("url")),
        RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        },
    );
    for _ in 0..3 {
        short.deliver_due().await.expect("deliver");
        w.advance(TimeDelta::hours(2));
    }
    let row = outbox::get(w.pool(), lost)
        .await
        .expect("get")
        .expect("row");
    assert_eq!((row.status.as_str(), row.attempts), ("dead", 3));
    let stats = outbox::stats(w.pool(), w.clock.now()).await.expect("stats");
    assert_eq!((stats.sent, stats.dead, stats.discarded), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_outs_languages_and_erasure_decide_who_is_told_what() {
    let mut w = World::new().await;
    // German, and no optional messages.
    w.set_preferences(Locale::De, false).await;
    let booking = w.place(1).await;
    w.pay(booking).await;
    // The slot ends; the booking completes (points for a completed booking, a review invitation).
    w.clock.set(t(20, 15));
    w.settle().await;
    let all = w.messages().await;
    let templates: Vec<&str> = all.iter().map(|r| r.template.as_str()).collect();
    assert!(templates.contains(&"booking_confirmed"));
    assert!(
        !templates
            .iter()
            .any(|t| matches!(*t, "review_invitation" | "points_earned" | "badge_unlocked")),
        "opted out: {templates:?}"
    );
    let confirmed = all
        .iter()
        .find(|r| r.template == "booking_confirmed")
        .expect("confirmed");
    assert_eq!(confirmed.locale, "de");
    assert!(
        confirmed
            .subject
            .starts_with("Bestätigt: Sunrise kayak tour")
    );

    // Opted back in, in English: the next completion brings the optional messages, each with
    // a signed one-click unsubscribe link.
    w.set_preferences(Locale::En, true).await;
    let second = w.place_on(w.later_slot, 1).await;
    w.pay(second).await;
    w.clock.set(t(27, 15));
    w.settle().await;
    let dir = tempfile::tempdir().expect("dir");
    let files = Arc::new(MailDir {
        dir: dir.path().to_owned(),
    });
    let deliverer = w.deliverer(files, RetryPolicy::default());
    deliverer.deliver_due().await.expect("deliver");
    let review = w
        .messages()
        .await
        .into_iter()
        .find(|r| r.template == "review_invitation")
        .expect("a review invitation");
    assert!(review.marketing && review.status == "sent");
    let eml = std::fs::read_to_string(dir.path().join(format!("{}.eml", review.id))).expect("eml");
    let link = header(&eml, "List-Unsubscribe").expect("List-Unsubscribe");
    assert_eq!(
        header(&eml, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let token = link
        .trim_matches(['<', '>'])
        .rsplit('/')
        .next()
        .expect("token");
    assert_eq!(
        tessera_notify::unsubscribe::verify(KEY, token),
        Some(w.customer)
    );

    // Erased: nothing more, and no message state keeps the address or the words.
    let pending_reminder_before = w.templates_with_status("pending").await;
    w.erase_customer().await;
    let rows = outbox::list(
        w.pool(),
        &outbox::Filter {
            recipient: Some(w.customer.0),
            limit: 1000,
            ..outbox::Filter::default()
        },
    )
    .await
    .expect("list");
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.sealed_address.is_none()));
    assert!(rows.iter().all(|r| r.status != "pending"));
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE recipient = $1 AND (message IS NOT NULL
           OR subject NOT LIKE '[erased]%' OR position('ada@example.org' in coalesce(last_error, '')) > 0)",
    )
    .bind(w.customer.0)
    .fetch_one(w.pool())
    .await
    .expect("count");
    assert_eq!(
        stored, 0,
        "pending before erasure: {pending_reminder_before:?}"
    );
    w.replay_everything().await;
    assert!(
        outbox::list(
            w.pool(),
            &outbox::Filter {
                recipient: Some(w.customer.0),
                status: Some("pending".into()),
                limit: 10,
                ..outbox::Filter::default()
            }
        )
        .await
        .expect("list")
        .is_empty(),
        "a replay after the erasure writes nothing to them again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_daily_summary_goes_once_per_day_in_their_language() {
    let w = World::new().await;
    set_notification_preferences(
        &*w.store,
        w.provider,
        Locale::De,
        true,
        &w.ctx("user:provider"),
    )
    .await
    .expect("preferences");
    let slots = [tessera_notify::direct::SummarySlot {
        title: "Sunrise kayak tour".into(),
        starts_at: t(20, 10),
        capacity: 10,
        confirmed: 4,
        held: 1,
    }];
    let config = NotifyConfig::new("https://tessera.example", KEY.to_vec());
    let day = t(20, 0).date_naive();
    for _ in 0..2 {
        tessera_notify::direct::send_daily_summary(
            &*w.store,
            w.pool(),
            &w.vault,
            &config,
            w.provider,
            day,
            &slots,
            t(19, 17),
        )
        .await
        .expect("summary");
    }
    let summaries: Vec<_> = w
        .messages()
        .await
        .into_iter()
        .filter(|m| m.template == "provider_daily_summary")
        .collect();
    assert_eq!(summaries.len(), 1, "once per provider and day");
    assert_eq!(summaries[0].recipient, w.provider.0);
    assert_eq!(summaries[0].locale, "de");
    assert!(
        summaries[0]
            .subject
            .contains("1 Termin(e), 4 Platz/Plätze gebucht"),
        "{}",
        summaries[0].subject
    );
}
