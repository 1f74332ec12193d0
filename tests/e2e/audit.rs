//! Tamper evidence through the real `tessera audit` commands: a log loaded by the fixture
//! generator is sealed, altered directly in PostgreSQL in one way per test, and `audit verify`
//! must name the first event or seal that no longer matches (exit status 2). Exports are checked
//! offline the same way.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;
use tessera_log::store::{EventMetadata, GENESIS_HASH, Hash, HashedFields, StreamId, chain_hash};
use tessera_log::testkit::TestDatabase;
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(180);

fn tessera(db: &TestDatabase, data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("DATABASE_URL", db.url())
        .env_remove("TESSERA_SEAL_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs a command to its end: (exit code, stdout).
async fn run(db: &TestDatabase, dir: &Path, args: &[&str]) -> (i32, String) {
    let out = tokio::time::timeout(DEADLINE, tessera(db, dir, args).output())
        .await
        .expect("command finished before the deadline")
        .expect("spawn tessera");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("$ tessera {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout)
}

/// A database holding the tiny fixtures, sealed.
async fn sealed() -> (TestDatabase, tempfile::TempDir) {
    let db = TestDatabase::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _) = run(
        &db,
        dir.path(),
        &[
            "fixtures",
            "load",
            "--scale",
            "tiny",
            "--seed",
            "5",
            "--until",
            "2026-11-20",
        ],
    )
    .await;
    assert_eq!(code, 0, "fixtures load");
    let (code, out) = run(&db, dir.path(), &["audit", "seal"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("seal #1: positions 1.."), "{out}");
    (db, dir)
}

async fn verify(db: &TestDatabase, dir: &Path) -> (i32, String) {
    run(db, dir, &["audit", "verify"]).await
}

/// The line naming the first problem.
fn first_problem(out: &str) -> &str {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("FAILED"));
    lines.next().expect("a FAILED line");
    lines.next().expect("the first problem").trim()
}

/// A booking stream with at least three events: (stream, [(position, version)]).
async fn busy_booking(pool: &PgPool) -> (String, Vec<(i64, i64)>) {
    let stream: String = sqlx::query_scalar(
        "SELECT stream_id FROM events WHERE stream_id LIKE 'booking-%' \
         GROUP BY stream_id HAVING count(*) >= 3 ORDER BY min(position) LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .expect("a booking with three events");
    let events = sqlx::query_as(
        "SELECT position, stream_version FROM events WHERE stream_id = $1 ORDER BY stream_version",
    )
    .bind(&stream)
    .fetch_all(pool)
    .await
    .expect("its events");
    (stream, events)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untouched_log_verifies_and_exports_verify_offline() {
    let (db, dir) = sealed().await;
    let (code, out) = verify(&db, dir.path()).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("OK: every hash chain and seal re-derives"),
        "{out}"
    );

    // A range export re-derives offline; one altered byte in the file is caught.
    let file = dir.path().join("log.ndjson");
    let file_arg = file.to_str().expect("utf-8 path");
    let (code, _) = run(&db, dir.path(), &["audit", "export", "--output", file_arg]).await;
    assert_eq!(code, 0);
    let (code, out) = run(&db, dir.path(), &["audit", "verify-export", file_arg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK:") && out.contains("1 seals"), "{out}");
    let text = std::fs::read_to_string(&file).expect("export");
    let tampered = text.replacen("\"seats\":2", "\"seats\":3", 1);
    assert_ne!(tampered, text, "the export holds a two-seat booking");
    std::fs::write(&file, tampered).expect("write");
    let (code, out) = run(&db, dir.path(), &["audit", "verify-export", file_arg]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("does not match its hash"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_changed_byte_names_that_event() {
    let (db, dir) = sealed().await;
    let (stream, events) = busy_booking(&db.pool).await;
    let (position, version) = events[1];
    let data: String = sqlx::query_scalar("SELECT data::text FROM events WHERE position = $1")
        .bind(position)
        .fetch_one(&db.pool)
        .await
        .expect("data");
    // Flip one digit: still valid JSON, one byte different.
    let at = data.find(|c: char| c.is_ascii_digit()).expect("a digit");
    let mut bytes = data.into_bytes();
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    let altered = String::from_utf8(bytes).expect("utf-8");
    sqlx::query("UPDATE events SET data = $2::json WHERE position = $1")
        .bind(position)
        .bind(altered)
        .execute(&db.pool)
        .await
        .expect("tamper");

    let (code, out) = verify(&db, dir.path()).await;
    assert_eq!(code, 2, "{out}");
    let first = first_problem(&out);
    assert!(
        first.starts_with(&format!(
            "position {position}, stream {stream} version {version}"
        )),
        "{first}"
    );
    assert!(first.contains("does not match its stored hash"), "{first}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_event_is_named() {
    let (db, dir) = sealed().await;
    let (stream, events) = busy_booking(&db.pool).await;
    let (position, version) = events[1];
    sqlx::query("DELETE FROM events WHERE position = $1")
        .bind(position)
        .execute(&db.pool)
        .await
        .expect("tamper");

    let (code, out) = verify(&db, dir.path()).await;
    assert_eq!(code, 2, "{out}");
    let first = first_problem(&out);
    assert!(
        first.starts_with(&format!("position {position}, seal #1")),
        "{first}"
    );
    assert!(
        first.contains(&format!("position {position} is missing")),
        "{first}"
    );
    // The stream it belonged to is named where the gap shows.
    assert!(
        out.contains(&format!("stream {stream} version {}", version + 1))
            && out.contains(&format!("version {version} of its stream is missing")),
        "{out}"
    );
    assert!(out.contains("seal #1 over positions 1.."), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn swapped_events_are_named() {
    let (db, dir) = sealed().await;
    let (stream, events) = busy_booking(&db.pool).await;
    let ((a, _), (b, _)) = (events[0], events[1]);
    let mut tx = db.pool.begin().await.expect("tx");
    for (from, to) in [(a, 1_000_000_000), (b, a), (1_000_000_000, b)] {
        sqlx::query("UPDATE events SET position = $2 WHERE position = $1")
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await
            .expect("swap");
    }
    tx.commit().await.expect("commit");

    let (code, out) = verify(&db, dir.path()).await;
    assert_eq!(code, 2, "{out}");
    let first = first_problem(&out);
    assert!(
        first.starts_with(&format!("position {a}, stream {stream} version 2")),
        "{first}"
    );
    assert!(first.contains("the log order was changed"), "{first}");
    assert!(out.contains("seal #1 over positions 1.."), "{out}");
}

/// Issue 19, point 16: two adjacent events of different streams swapped keep every stream's
/// chain and order intact; the seal's witness names the first position that changed.
#[tokio::test(flavor = "multi_thread")]
async fn adjacent_events_of_two_streams_swapped_are_named() {
    let (db, dir) = sealed().await;
    let a: i64 = sqlx::query_scalar(
        "SELECT e.position FROM events e JOIN events n ON n.position = e.position + 1 \
          WHERE n.stream_id <> e.stream_id ORDER BY e.position LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("two adjacent events of different streams");
    let b = a + 1;
    let mut tx = db.pool.begin().await.expect("tx");
    for (from, to) in [(a, 1_000_000_000), (b, a), (1_000_000_000, b)] {
        sqlx::query("UPDATE events SET position = $2 WHERE position = $1")
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await
            .expect("swap");
    }
    tx.commit().await.expect("commit");
    let (code, out) = verify(&db, dir.path()).await;
    assert_eq!(code, 2, "{out}");
    let first = first_problem(&out);
    assert!(
        first.starts_with(&format!("position {a}, seal #1")),
        "{first}"
    );
    assert!(
        first.contains("is not the one seal #1 sealed there"),
        "{first}"
    );
}

/// Issue 19, point 16: the sealer refuses a range that is not dense (an event was deleted
/// before it was sealed), raises an alert, and seals nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_sealer_refuses_a_range_with_a_hole() {
    let (db, dir) = sealed().await;
    // Unseal everything, then delete an event: the next seal would vouch for a hole.
    sqlx::query("DELETE FROM log_seals")
        .execute(&db.pool)
        .await
        .expect("unseal");
    let hole: i64 = sqlx::query_scalar("SELECT position / 2 FROM log_head")
        .fetch_one(&db.pool)
        .await
        .expect("head");
    sqlx::query("DELETE FROM events WHERE position = $1")
        .bind(hole)
        .execute(&db.pool)
        .await
        .expect("tamper");
    let out = tokio::time::timeout(
        DEADLINE,
        tessera(&db, dir.path(), &["audit", "seal"]).output(),
    )
    .await
    .expect("seal finished before the deadline")
    .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refuses") && stderr.contains(&format!("position {hole}")),
        "{stderr}"
    );
    let seals: i64 = sqlx::query_scalar("SELECT count(*) FROM log_seals")
        .fetch_one(&db.pool)
        .await
        .expect("seals");
    assert_eq!(seals, 0, "nothing was sealed");
    let alerts: Vec<String> =
        sqlx::query_scalar("SELECT problem FROM seal_alerts WHERE cleared_at IS NULL")
            .fetch_all(&db.pool)
            .await
            .expect("alerts");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].contains(&format!("position {hole}")),
        "{alerts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_stream_fails_the_seal_covering_it() {
    let (db, dir) = sealed().await;
    // The tail of the log that belongs to its last stream, deleted: a chain cut at its end
    // still links and the global order has no hole, so only the seal knows.
    let stream: String =
        sqlx::query_scalar("SELECT stream_id FROM events ORDER BY position DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .expect("a stream");
    let deleted = sqlx::query(
        "DELETE FROM events
          WHERE position > (SELECT max(position) FROM events WHERE stream_id <> $1)",
    )
    .bind(&stream)
    .execute(&db.pool)
    .await
    .expect("tamper")
    .rows_affected();
    assert!(deleted >= 1);

    let (code, out) = verify(&db, dir.path()).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("seal #1 over positions 1.."), "{out}");
    assert!(out.contains("does not match the log"), "{out}");
}

/// The stored fields of one event that its hash covers (besides stream, version and actor).
#[derive(sqlx::FromRow)]
struct Stored {
    data: String,
    event_id: uuid::Uuid,
    event_type: String,
    schema_version: i32,
    correlation_id: uuid::Uuid,
    causation_id: Option<uuid::Uuid>,
    reason: Option<String>,
    recorded_at: chrono::DateTime<chrono::Utc>,
    effective_at: chrono::DateTime<chrono::Utc>,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewritten_event_with_a_recomputed_chain_is_caught_by_the_seal() {
    let (db, dir) = sealed().await;
    // The last event of a booking stream, rewritten with its hash recomputed: its chain holds,
    // so only the seal's Merkle root can tell.
    let (stream, events) = busy_booking(&db.pool).await;
    let (position, version) = *events.last().expect("events");
    let row: Stored = sqlx::query_as(
        "SELECT data::text AS data, event_id, event_type, schema_version, correlation_id, \
                causation_id, reason, recorded_at, effective_at FROM events WHERE position = $1",
    )
    .bind(position)
    .fetch_one(&db.pool)
    .await
    .expect("event");
    let previous: Vec<u8> =
        sqlx::query_scalar("SELECT hash FROM events WHERE stream_id = $1 AND stream_version = $2")
            .bind(&stream)
            .bind(version - 1)
            .fetch_one(&db.pool)
            .await
            .expect("predecessor");
    let forged_actor = "someone-else".to_owned();
    let metadata = EventMetadata {
        correlation_id: row.correlation_id,
        causation_id: row.causation_id,
        actor: forged_actor.clone(),
        reason: row.reason.clone(),
    };
    let stream_id = StreamId::new(stream.clone()).expect("stream id");
    let hash = chain_hash(
        &Hash::from_slice(&previous).unwrap_or(GENESIS_HASH),
        &HashedFields {
            event_id: row.event_id,
            stream_id: &stream_id,
            stream_version: version as u64,
            event_type: &row.event_type,
            schema_version: row.schema_version as u32,
            data: &row.data,
            metadata: &metadata,
            recorded_at: row.recorded_at,
            effective_at: row.effective_at,
        },
    );
    sqlx::query("UPDATE events SET actor = $2, hash = $3 WHERE position = $1")
        .bind(position)
        .bind(forged_actor)
        .bind(hash.0.as_slice())
        .execute(&db.pool)
        .await
        .expect("tamper");

    let (code, out) = verify(&db, dir.path()).await;
    assert_eq!(code, 2, "{out}");
    // The seal's witness names the rewritten event itself, then the seal whose root differs.
    let first = first_problem(&out);
    assert!(
        first.starts_with(&format!("position {position}, seal #1"))
            && first.contains("is not the one seal #1 sealed there"),
        "{first}"
    );
    assert!(out.contains("does not match the log"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_altered_seal_is_named() {
    let (db, dir) = sealed().await;
    sqlx::query("UPDATE log_seals SET to_position = to_position - 1 WHERE seq = 1")
        .execute(&db.pool)
        .await
        .expect("tamper");
    let (code, out) = verify(&db, dir.path()).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("seal #1 was altered"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_booking_history_spans_its_streams_and_time_travels() {
    let (db, dir) = sealed().await;
    // A booking that was paid, cancelled, then refunded (so it ends Refunded; a completed one
    // refunded in part stays Completed): its history crosses booking, slot, payment and
    // loyalty streams.
    let booking: uuid::Uuid = sqlx::query_scalar(
        "SELECT (r.data->>'booking_id')::uuid FROM events r WHERE r.event_type = 'BookingRefunded' \
           AND EXISTS (SELECT 1 FROM events c WHERE c.stream_id = r.stream_id \
                                                AND c.event_type = 'BookingCancelled') \
         ORDER BY r.position LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("a refunded booking in the fixtures");
    let id = booking.to_string();
    let (code, out) = run(&db, dir.path(), &["audit", "history", &id, "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let entries: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
    let types: Vec<String> = entries.iter().map(|e| field(e, "event_type")).collect();
    for expected in [
        "BookingPlaced",
        "SeatsHeld",
        "PaymentSucceeded",
        "BookingConfirmed",
        "BookingRefunded",
    ] {
        assert!(
            types.iter().any(|t| t == expected),
            "{expected} missing from {types:?}"
        );
    }
    let links: std::collections::BTreeSet<String> =
        entries.iter().map(|e| field(e, "link")).collect();
    for expected in ["booking", "seats", "payment"] {
        assert!(
            links.contains(expected),
            "no {expected} events in {links:?}"
        );
    }
    let positions: Vec<u64> = entries
        .iter()
        .map(|e| e["position"].as_u64().expect("position"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "log order: {positions:?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| field(e, "hash").len() == 64 && !field(e, "actor").is_empty())
    );
    // Every event of another booking stays out.
    assert!(entries.iter().all(|e| {
        let s = field(e, "stream");
        !s.starts_with("booking-") || s == format!("booking-{id}")
    }));

    // Time travel: right after it was placed it was held; at the head it is refunded.
    let placed = entries
        .iter()
        .find(|e| field(e, "event_type") == "BookingPlaced")
        .expect("placed");
    let stream = format!("booking-{id}");
    let at_placed = placed["position"].to_string();
    let (code, out) = run(
        &db,
        dir.path(),
        &["audit", "state", &stream, "--position", &at_placed],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let then: serde_json::Value = serde_json::from_str(&out).expect("state JSON");
    assert_eq!(then["events_applied"], 1);
    assert_eq!(then["state"]["Placed"]["status"], "held", "{then}");
    let (code, out) = run(&db, dir.path(), &["audit", "state", &stream]).await;
    assert_eq!(code, 0, "{out}");
    let now: serde_json::Value = serde_json::from_str(&out).expect("state JSON");
    assert_eq!(now["state"]["Placed"]["status"], "refunded", "{now}");
    // By time: what the log had recorded when the booking was placed.
    let at_time = field(placed, "recorded_at");
    let (code, out) = run(
        &db,
        dir.path(),
        &["audit", "state", &stream, "--at", &at_time],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let by_time: serde_json::Value = serde_json::from_str(&out).expect("state JSON");
    assert_eq!(by_time["state"]["Placed"]["status"], "held", "{by_time}");

    // What the read model said then: the projection's own logic replayed up to that moment.
    let (code, out) = run(
        &db,
        dir.path(),
        &["audit", "read-model", &id, "--position", &at_placed],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let then: serde_json::Value = serde_json::from_str(&out).expect("read model JSON");
    assert_eq!(then["read_model"]["booking"]["status"], "held", "{then}");
    assert_eq!(
        then["read_model"]["timeline"].as_array().map(Vec::len),
        Some(1),
        "{then}"
    );
    let (code, out) = run(&db, dir.path(), &["audit", "read-model", &id]).await;
    assert_eq!(code, 0, "{out}");
    let now: serde_json::Value = serde_json::from_str(&out).expect("read model JSON");
    assert_eq!(now["read_model"]["booking"]["status"], "refunded", "{now}");
    assert!(
        now["read_model"]["booking"]["refunded_minor"]
            .as_i64()
            .is_some_and(|r| r > 0),
        "{now}"
    );
    // Nothing was left behind by the replays.
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'audit_replay_%'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("schemas");
    assert_eq!(leftovers, 0);

    // The history cut at the placement holds nothing later.
    let (code, out) = run(
        &db,
        dir.path(),
        &["audit", "history", &id, "--json", "--position", &at_placed],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.lines().count() < entries.len());

    // Browsing the log by type pages with a cursor.
    let (code, out) = run(
        &db,
        dir.path(),
        &["audit", "log", "--type", "BookingPlaced", "--limit", "2"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.contains("BookingPlaced")).count(),
        2,
        "{out}"
    );
    assert!(out.contains("next page: --after"), "{out}");
    // Unknown things are clear errors, not crashes.
    let (code, _) = run(
        &db,
        dir.path(),
        &["audit", "history", &uuid::Uuid::nil().to_string()],
    )
    .await;
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_commands_from_the_cli_record_the_admin_and_reason() {
    let (db, dir) = sealed().await;
    let admin: String = sqlx::query_scalar(
        "SELECT data->>'user_id' FROM events WHERE event_type = 'RoleGranted' \
           AND data->>'role' = 'admin' ORDER BY position LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("an admin");
    let customer: String = sqlx::query_scalar(
        "SELECT data->>'customer_id' FROM events WHERE event_type = 'BookingPlaced' ORDER BY position LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("a customer");
    // A confirmed booking with nothing after its confirmation.
    let booking: String = sqlx::query_scalar(
        "SELECT data->>'booking_id' FROM events e WHERE event_type = 'BookingConfirmed' \
           AND NOT EXISTS (SELECT 1 FROM events x WHERE x.stream_id = e.stream_id \
                                                   AND x.stream_version > e.stream_version) \
         ORDER BY position DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("a confirmed booking");

    // Only an admin may issue it.
    let (code, _) = run(
        &db,
        dir.path(),
        &[
            "admin", "points", &admin, "--delta", "5", "--as", &customer, "--reason", "x",
        ],
    )
    .await;
    assert_eq!(code, 1);
    let (code, out) = run(
        &db,
        dir.path(),
        &[
            "admin",
            "force-cancel",
            &booking,
            "--waive-fee",
            "--as",
            &admin,
            "--reason",
            "venue flooded",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("applied at position"), "{out}");
    let (code, out) = run(
        &db,
        dir.path(),
        &[
            "admin",
            "points",
            &customer,
            "--delta",
            "25",
            "--as",
            &admin,
            "--reason",
            "goodwill correction",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    // The domain still decides: a balance never goes below zero, whoever asks.
    let (code, _) = run(
        &db,
        dir.path(),
        &[
            "admin", "points", &customer, "--delta", "-1000000", "--as", &admin, "--reason", "typo",
        ],
    )
    .await;
    assert_eq!(code, 1);

    let (_, out) = run(&db, dir.path(), &["audit", "history", &booking, "--json"]).await;
    let cancelled: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|e| e["event_type"] == "BookingCancelled")
        .expect("the cancellation is in the history");
    assert_eq!(cancelled["actor"], format!("user:{admin}"));
    assert_eq!(cancelled["reason"], "venue flooded");
    // The log still verifies after admins acted (new events are simply not sealed yet).
    let (code, out) = verify(&db, dir.path()).await;
    assert_eq!(code, 0, "{out}");
}
