//! Projector processes: SIGKILLed at random points during catch-up they resume to exactly what
//! a clean rebuild produces; two processes started together split the projections, each applied
//! by exactly one of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, PgPool};
use tessera_log::testkit::TestDatabase;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(180);
const PROJECTIONS: usize = 8;

fn tessera(db: &TestDatabase, data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run_to_end(mut cmd: Command) {
    let out = tokio::time::timeout(DEADLINE, cmd.stderr(Stdio::inherit()).status())
        .await
        .expect("command finished before the deadline")
        .expect("spawn");
    assert!(out.success(), "command failed: {out}");
}

async fn loaded(scale: &str) -> (TestDatabase, tempfile::TempDir) {
    let db = TestDatabase::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = tessera(&db, dir.path());
    cmd.args([
        "fixtures",
        "load",
        "--scale",
        scale,
        "--seed",
        "3",
        "--until",
        "2026-11-20",
    ]);
    run_to_end(cmd).await;
    (db, dir)
}

/// Starts `tessera project`; its log lines are collected into the returned receiver.
fn project(
    db: &TestDatabase,
    dir: &Path,
    batch: usize,
) -> (Child, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut child = tessera(db, dir)
        .args(["project", "--batch-size", &batch.to_string()])
        .spawn()
        .expect("spawn tessera project");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

async fn positions(pool: &PgPool) -> (i64, Vec<(String, i64)>) {
    let status = tessera_projections::status(pool).await.expect("status");
    assert!(
        status.iter().all(|s| s.state != "failed"),
        "a projection failed: {status:?}"
    );
    let head = status.first().map_or(0, |s| s.head);
    (
        head,
        status.into_iter().map(|s| (s.name, s.position)).collect(),
    )
}

/// Waits until `done` holds for the projections' positions.
async fn wait_for(pool: &PgPool, what: &str, done: impl Fn(i64, &[(String, i64)]) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (head, p) = positions(pool).await;
        if done(head, &p) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: head {head}, {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn all_caught_up(head: i64, p: &[(String, i64)]) -> bool {
    p.len() == PROJECTIONS && p.iter().all(|(_, pos)| *pos == head)
}

async fn dump(pool: &PgPool) -> BTreeMap<String, Vec<String>> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN projection_generations g ON n.nspname = 'proj_' || g.name || '_g' || g.generation
         WHERE g.state = 'active' AND c.relkind = 'r' ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    let mut out = BTreeMap::new();
    for (schema, table) in tables {
        let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT to_jsonb(t)::text FROM {schema}.{table} t ORDER BY 1"
        )))
        .fetch_all(pool)
        .await
        .expect("rows");
        out.insert(table, rows);
    }
    out
}

async fn everything(pool: &PgPool, dir: &Path) -> Vec<(i64, uuid::Uuid, u64)> {
    use tessera_projections::search::{SearchIndex, SearchQuery, Sort};
    let index = SearchIndex::new(pool.clone(), &dir.join("index"));
    let r = index
        .search(&SearchQuery {
            sort: Sort::PriceAsc,
            limit: 100,
            ..SearchQuery::default()
        })
        .await
        .expect("search");
    let mut v: Vec<_> = r
        .hits
        .iter()
        .map(|h| (h.price_minor, h.listing_id, h.review_count))
        .collect();
    v.sort();
    v
}

async fn terminate(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("stopped in time")
        .expect("wait");
    assert!(status.success(), "tessera project exited with {status}");
}

/// Compares the read models and the search index with a clean rebuild of everything.
async fn equals_a_clean_rebuild(db: &TestDatabase, dir: &Path) {
    let before = dump(&db.pool).await;
    let search_before = everything(&db.pool, dir).await;
    let mut cmd = tessera(db, dir);
    cmd.args(["projections", "rebuild", "--all"]);
    run_to_end(cmd).await;
    let after = dump(&db.pool).await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (table, rows) in &before {
        assert_eq!(rows, &after[table], "{table} differs from a clean rebuild");
    }
    assert_eq!(
        search_before,
        everything(&db.pool, dir).await,
        "the search index differs from a clean rebuild"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_catch_up_resumes_exactly() {
    let (db, dir) = loaded("small").await;
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&db.pool)
        .await
        .expect("head");
    assert!(
        head > 2_000,
        "a few thousand events to catch up on, got {head}"
    );
    // Kill points spread over the catch-up: each kill comes once the slowest projection has
    // passed the next fraction of the log, wherever the others are.
    let mut mid_catch_up = 0;
    for k in 1..=6i64 {
        let (child, _logs) = project(&db, dir.path(), 25);
        let target = head * k / 8;
        wait_for(&db.pool, "progress", |_, p| {
            p.len() == PROJECTIONS && p.iter().all(|(_, pos)| *pos >= target)
        })
        .await;
        let mut child = child;
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("reaped");
        let (_, p) = positions(&db.pool).await;
        if p.iter().any(|(_, pos)| *pos < head) {
            mid_catch_up += 1;
        }
    }
    assert!(
        mid_catch_up >= 5,
        "only {mid_catch_up} kills landed during the catch-up"
    );
    let (child, _logs) = project(&db, dir.path(), 25);
    wait_for(&db.pool, "catch-up after the kills", all_caught_up).await;
    terminate(child).await;
    equals_a_clean_rebuild(&db, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projector_processes_apply_each_projection_once() {
    let (db, dir) = loaded("tiny").await;
    let (a, mut logs_a) = project(&db, dir.path(), 10);
    let (b, mut logs_b) = project(&db, dir.path(), 10);
    wait_for(&db.pool, "catch-up", all_caught_up).await;
    let owners: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT name, owner_label FROM projections ORDER BY name")
            .fetch_all(&db.pool)
            .await
            .expect("owners");
    let (pa, pb) = (a.id().expect("a"), b.id().expect("b"));
    for (name, owner) in &owners {
        let owner = owner.as_deref().unwrap_or_default();
        assert!(
            owner.ends_with(&format!("pid {pa}")) || owner.ends_with(&format!("pid {pb}")),
            "{name} owned by {owner}"
        );
    }
    // Count lease acquisitions while both run: once one process stops, the other rightly takes
    // its projections over, so the count is taken before stopping either.
    let mut acquired: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + DEADLINE;
    while acquired.len() < PROJECTIONS {
        for logs in [&mut logs_a, &mut logs_b] {
            while let Ok(line) = logs.try_recv() {
                let line = strip_ansi(&line);
                if line.contains("projection lease acquired") {
                    let name = line
                        .split("projection=")
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                        .unwrap_or("?")
                        .trim_matches('"');
                    *acquired.entry(name.to_owned()).or_default() += 1;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every projection was taken: {acquired:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        acquired.len(),
        PROJECTIONS,
        "every projection was taken by someone: {acquired:?}"
    );
    assert!(
        acquired.values().all(|n| *n == 1),
        "each projection taken exactly once: {acquired:?}"
    );
    terminate(a).await;
    terminate(b).await;
    equals_a_clean_rebuild(&db, dir.path()).await;
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until every projection's status shows `state` and, when `owner` is given, an owner
/// label ending with it (none otherwise).
async fn status_shows(pool: &PgPool, state: &str, owner: Option<&str>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = tessera_projections::status(pool).await.expect("status");
        let shown = status.len() == PROJECTIONS
            && status.iter().all(|s| {
                s.state == state
                    && match owner {
                        Some(o) => s.owner.as_deref().is_some_and(|l| l.ends_with(o)),
                        None => s.owner.is_none(),
                    }
            });
        if shown {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {state} / {owner:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `tessera projections status` reflects who holds each lease now: nobody after the projector
/// was killed, nobody after it stopped gracefully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_who_holds_the_lease_now() {
    let (db, dir) = loaded("tiny").await;
    let (mut child, _logs) = project(&db, dir.path(), 50);
    let pid = format!("pid {}", child.id().expect("running"));
    status_shows(&db.pool, "live", Some(&pid)).await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    status_shows(&db.pool, "stopped", None).await;

    let (child, _logs) = project(&db, dir.path(), 50);
    let pid = format!("pid {}", child.id().expect("running"));
    status_shows(&db.pool, "live", Some(&pid)).await;
    terminate(child).await;
    status_shows(&db.pool, "stopped", None).await;
}

/// Issue 19, point 18: a rebuild swapped in by another process reaches a running `tessera
/// serve` without any new event: its searches answer from the new generation (the API follows
/// swaps at once through the progress channel, and within half a second through its safety-net
/// read; its cached answers are keyed by generation as well as position).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_rebuild_reaches_a_running_serve_without_new_events() {
    let (db, dir) = loaded("tiny").await;
    let (projector, _logs) = project(&db, dir.path(), 50);
    wait_for(&db.pool, "catch-up", all_caught_up).await;
    let mut serve = tessera(&db, dir.path())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tessera serve");
    let stdout = serve.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("stdout") {
            if let Some(rest) = line.strip_prefix("Tessera API listening on ") {
                return rest.trim().trim_end_matches("/api/v1").to_owned();
            }
        }
        panic!("tessera serve exited before listening");
    })
    .await
    .expect("tessera serve listened before the deadline");
    let client = reqwest::Client::new();
    let generation = || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let page: serde_json::Value = client
                .get(format!("{url}/api/v1/listings?q=tour&limit=5"))
                .send()
                .await
                .expect("search")
                .json()
                .await
                .expect("json");
            page["generation"].as_i64().expect("generation")
        }
    };
    let before = generation().await;
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&db.pool)
        .await
        .expect("head");
    let mut rebuild = tessera(&db, dir.path());
    rebuild.args(["projections", "rebuild", "search"]);
    run_to_end(rebuild).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = generation().await;
        if now > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tessera serve still answers from generation {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&db.pool)
        .await
        .expect("head");
    assert_eq!(after, head, "no event was appended meanwhile");
    terminate(serve).await;
    terminate(projector).await;
}
