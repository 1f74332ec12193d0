//! On-sale across processes (issue 21): two `tessera serve` on one database rushing one slot
//! never oversell and never answer `request.contention`; a process killed with SIGKILL while
//! holds wait in its queue loses no acknowledged hold, and every request retried with its key
//! gets one answer and one booking.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tessera_commands::catalog::{Acting, schedule_slot};
use tessera_commands::handler::{CommandContext, load, stream_of};
use tessera_domain::slot::{SlotAggregate, SlotState};
use tessera_domain::values::{ListingId, SlotId};
use tessera_log::store::{EventStore, PgEventStore, PgStoreOptions};
use tessera_log::testkit::TestDatabase;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(120);

/// `tessera serve` on `db`; returns the child and its API root once it listens.
async fn serve(db: &TestDatabase, dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("--data-dir")
        .arg(dir)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--commands-per-second",
            "100000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tessera serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let api = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("stdout") {
            if let Some(url) = line.strip_prefix("Tessera API listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("tessera serve exited before it listened");
    })
    .await
    .expect("tessera serve listened before the deadline");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, api)
}

/// A database holding the `tiny` fixtures, and a new slot of `seats` seats on one of its
/// listings.
async fn world(seats: u32) -> (TestDatabase, Arc<dyn EventStore>, SlotId) {
    let db = TestDatabase::new().await;
    let end = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .expect("noon")
        .and_utc();
    tessera_fixtures::load(
        db.pool.clone(),
        tessera_fixtures::Scale::named("tiny").expect("scale"),
        7,
        end,
        &|_, _| {},
        None,
    )
    .await
    .expect("fixtures");
    let listing: uuid::Uuid = sqlx::query_scalar(
        "SELECT (data->>'listing_id')::uuid FROM events p WHERE event_type = 'ListingPublished'
            AND NOT EXISTS (SELECT 1 FROM events r WHERE r.stream_id = p.stream_id
                              AND r.event_type = 'ListingRetired')
          ORDER BY position LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("a published listing");
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(
        db.pool.clone(),
        PgStoreOptions::default(),
    ));
    let now = chrono::Utc::now();
    let starts = now + chrono::TimeDelta::days(30);
    let (slot, _) = schedule_slot(
        &*store,
        Acting::Admin,
        ListingId(listing),
        starts,
        starts + chrono::TimeDelta::hours(2),
        seats,
        None,
        &CommandContext::new(uuid::Uuid::new_v4(), "user:admin", now).with_reason("on-sale test"),
    )
    .await
    .expect("schedule the slot");
    (db, store, slot)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

async fn tokens(client: &reqwest::Client, api: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..5 {
        let email = if i == 0 {
            "customer@tessera.test".to_owned()
        } else {
            format!("customer{i}@tessera.test")
        };
        let r: Value = client
            .post(format!("{api}/auth/login"))
            .json(&json!({ "email": email, "password": tessera_fixtures::DEMO_PASSWORD }))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login body");
        tokens.push(r["access_token"].as_str().expect("token").to_owned());
    }
    tokens
}

/// One hold: the status and body, or `None` when the connection failed.
async fn hold(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    slot: SlotId,
    key: &str,
) -> Option<(u16, Value)> {
    let response = client
        .post(format!("{api}/bookings"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({ "slot_id": slot.0, "seats": 1 }))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// The bookings holding seats on `slot`, from its whole stream.
async fn holders(store: &dyn EventStore, slot: SlotId) -> BTreeSet<String> {
    let loaded = load::<SlotAggregate>(store, stream_of::<SlotAggregate>(slot), uuid::Uuid::nil())
        .await
        .expect("load slot");
    match loaded.state {
        SlotState::Scheduled(s) => s.holds.keys().map(|b| b.0.to_string()).collect(),
        SlotState::New => panic!("no slot"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_serve_processes_rushing_one_slot_never_oversell_nor_surface_contention() {
    let (db, store, slot) = world(300).await;
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let (_a, api_a) = serve(&db, dir_a.path()).await;
    let (_b, api_b) = serve(&db, dir_b.path()).await;
    let client = reqwest::Client::new();
    let tokens = Arc::new(tokens(&client, &api_a).await);
    let barrier = Arc::new(tokio::sync::Barrier::new(600));
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            let api = if i % 2 == 0 { &api_a } else { &api_b }.clone();
            let (client, tokens, barrier) = (client.clone(), tokens.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let key = uuid::Uuid::new_v4().to_string();
                hold(&client, &api, &tokens[i % tokens.len()], slot, &key)
                    .await
                    .expect("an answer")
            })
        })
        .collect();
    let mut counts: BTreeMap<(u16, String), usize> = BTreeMap::new();
    let mut held = BTreeSet::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        if status == 201 {
            held.insert(body["booking_id"].as_str().expect("booking id").to_owned());
        }
        let code = body["code"].as_str().unwrap_or("").to_owned();
        *counts.entry((status, code)).or_default() += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([
            ((201, String::new()), 300),
            ((409, "slot.sold_out".to_owned()), 300)
        ])
    );
    assert_eq!(
        holders(&*store, slot).await,
        held,
        "every acknowledged hold in the log once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_killed_with_holds_queued_loses_none_and_retries_get_one_booking_each() {
    let (db, store, slot) = world(10_000).await;
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let (mut a, api_a) = serve(&db, dir_a.path()).await;
    let client = reqwest::Client::new();
    let tokens = Arc::new(tokens(&client, &api_a).await);
    let requests: Vec<(String, String)> = (0..500)
        .map(|i| (tokens[i % tokens.len()].clone(), format!("kill-{i}")))
        .collect();
    // Every request is sent at once; the process is killed as soon as 50 are answered, while
    // the rest wait in its queue or in flight.
    let (answered_tx, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|(token, key)| {
            let (client, api, answered) = (client.clone(), api_a.clone(), answered_tx.clone());
            tokio::spawn(async move {
                let outcome = hold(&client, &api, &token, slot, &key).await;
                let _ = answered.send(());
                outcome
            })
        })
        .collect();
    for _ in 0..50 {
        answered.recv().await.expect("an answer");
    }
    a.start_kill().expect("SIGKILL");
    a.wait().await.expect("reaped");
    let mut acknowledged = BTreeMap::new();
    for ((_, key), task) in requests.iter().zip(tasks) {
        if let Some((201, body)) = task.await.expect("task") {
            acknowledged.insert(
                key.clone(),
                body["booking_id"].as_str().expect("id").to_owned(),
            );
        }
    }
    assert!(
        acknowledged.len() >= 50,
        "{} acknowledged",
        acknowledged.len()
    );
    let before_retries = holders(&*store, slot).await;
    for booking in acknowledged.values() {
        assert!(
            before_retries.contains(booking),
            "acknowledged hold {booking} is in the log"
        );
    }

    // Every request is retried with its key on a new process: the acknowledged ones replay
    // their first answer, the others are decided now, or replayed if they were written.
    let (_b, api_b) = serve(&db, dir_b.path()).await;
    let mut bookings = BTreeSet::new();
    for (token, key) in &requests {
        let (status, body) = hold(&client, &api_b, token, slot, key)
            .await
            .expect("an answer");
        assert_eq!(status, 201, "{key}: {body}");
        let booking = body["booking_id"].as_str().expect("id").to_owned();
        if let Some(first) = acknowledged.get(key) {
            assert_eq!(&booking, first, "{key} replays its first answer");
        }
        assert!(bookings.insert(booking), "one booking per key");
    }
    assert_eq!(bookings.len(), 500);
    assert_eq!(
        holders(&*store, slot).await,
        bookings,
        "every request held its seat exactly once"
    );
}
