//! `tessera bench http`: the API served over loopback HTTP on the generated fixture data (the
//! bench database of `tessera bench rebuild`), under two workloads, each beside a baseline
//! measured in the same run:
//!
//! - **search**: 32 concurrent clients searching listings (a few hundred distinct queries:
//!   text, kind, category, price and date filters, geo radius). Baseline: the nearest plain
//!   PostgreSQL read (`ILIKE` over the catalog read model with the same filters and limit),
//!   at the same concurrency, straight through sqlx.
//! - **holds**: 200 concurrent customers placing one-seat holds over fresh slots scheduled for
//!   the run (each request with its own idempotency key), first saturated (closed loop), then
//!   paced (open loop at half the saturated throughput, or `--paced-rate`). Baseline: a
//!   CRUD-style hold in plain SQL (lock the slot row, check and decrement its seats, insert a
//!   booking row) at the same concurrency and pacing.
//!
//! Client and server share this machine's cores: the latencies include the client's own work.

#![allow(clippy::print_stdout)] // Benchmarks print their results.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::PgPool;

use tessera_projections::models::catalog;

use crate::settings::Settings;
use crate::startup::db::Database;
use crate::startup::{Platform, PlatformOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct HttpBenchArgs {
    /// Seconds each workload runs (after a short warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value_t = 32)]
    pub search_clients: usize,
    #[arg(long, default_value_t = 200)]
    pub hold_clients: usize,
    /// Turn the API's read cache off (every search runs the index query).
    #[arg(long)]
    pub no_cache: bool,
    /// Turn the command side's aggregate cache off (every hold reads its slot and listing).
    #[arg(long)]
    pub no_aggregate_cache: bool,
    /// Offered rate (requests per second) of the paced hold run; half the API's saturated
    /// throughput when not given.
    #[arg(long)]
    pub paced_rate: Option<f64>,
    /// Skip the saturated hold runs and measure only the paced ones (at `--paced-rate`).
    #[arg(long, requires = "paced_rate")]
    pub paced_only: bool,
    /// Run the API without projectors and reactors in this process (as `tessera serve`, with
    /// the read side elsewhere or stopped): separates the API's own cost from the read side's.
    #[arg(long)]
    pub api_only: bool,
    /// Run only this workload (both when not given).
    #[arg(long, value_enum)]
    pub only: Option<Workload>,
}

/// One of the benchmark's workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Search,
    Holds,
}

/// Latencies of one workload.
struct Measured {
    latencies: Vec<Duration>,
    errors: usize,
    refusals: usize,
    seconds: f64,
}

impl Measured {
    fn percentile(&self, p: f64) -> f64 {
        let mut v: Vec<f64> = self.latencies.iter().map(Duration::as_secs_f64).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i] * 1_000.0
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what:<34} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} ok, {} refused, {} errors)",
            self.throughput(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.latencies.len() - self.refusals,
            self.refusals,
            self.errors
        )
    }
}

/// What one request did.
enum Outcome {
    Ok,
    Refused,
    Error,
}

/// Runs `clients` concurrent loops of `call(client index, iteration)` for `seconds`, each
/// client sending its next request as soon as the last one is answered (closed loop: the
/// system runs saturated and latency is mostly queueing).
async fn drive<F, Fut>(clients: usize, seconds: u64, call: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    drive_paced(clients, seconds, None, call).await
}

/// [`drive`], or with `rate` (requests per second, all clients together) an open loop: each
/// client sends on a fixed schedule whether or not its last request was answered late, and a
/// latency is measured from the scheduled send time (as wrk2 does, so a stall is not hidden by
/// the requests it delayed).
async fn drive_paced<F, Fut>(clients: usize, seconds: u64, rate: Option<f64>, call: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let call = Arc::new(call);
    // Warm-up: connections, caches, JIT-free but not cold.
    let begin = Instant::now();
    let warm = begin + Duration::from_millis(1_500);
    let deadline = warm + Duration::from_secs(seconds);
    let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r.max(1.0)));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let call = call.clone();
        // Clients start spread over one interval, not all at once.
        let first = interval.map(|i| begin + i.mul_f64(c as f64 / clients as f64));
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut refusals) = (Vec::new(), 0, 0);
            let mut i = 0u64;
            loop {
                let started = match (first, interval) {
                    (Some(first), Some(interval)) => {
                        let at = first + interval.mul_f64(i as f64);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    _ => Instant::now(),
                };
                if started >= deadline {
                    break;
                }
                let outcome = call(c, i).await;
                i += 1;
                if started < warm {
                    continue;
                }
                match outcome {
                    Outcome::Ok => lat.push(started.elapsed()),
                    Outcome::Refused => {
                        lat.push(started.elapsed());
                        refusals += 1;
                    }
                    Outcome::Error => errors += 1,
                }
            }
            (lat, errors, refusals)
        }));
    }
    let mut m = Measured {
        latencies: Vec::new(),
        errors: 0,
        refusals: 0,
        seconds: seconds as f64,
    };
    for t in tasks {
        if let Ok((lat, errors, refusals)) = t.await {
            m.latencies.extend(lat);
            m.errors += errors;
            m.refusals += refusals;
        }
    }
    m
}

/// Runs on the rebuild bench's database; the read side runs at the niceness of the settings
/// (`--read-side-nice`, 0: the same priority as the API's).
pub async fn run(settings: &Settings, args: &HttpBenchArgs) -> anyhow::Result<()> {
    let db = Database::open(&settings.db_config("tessera_bench_rebuild")).await?;
    let result = bench(&db, &settings.data_dir, settings.read_side_nice, args).await;
    db.close().await?;
    result
}

/// Waits until every projection and every reactor has handled the whole log as it is now, so
/// that a workload neither starts with nor pays for the read side's backlog from the one before.
/// (The log still grows meanwhile: holds of earlier runs expire 15 minutes after they were
/// placed.)
async fn settle(pool: &PgPool, projections: usize) -> anyhow::Result<()> {
    if projections == 0 {
        return Ok(());
    }
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(pool)
        .await?;
    let started = Instant::now();
    loop {
        let status = tessera_projections::status(pool).await?;
        let reactors_behind: i64 =
            sqlx::query_scalar("SELECT count(*) FROM reactor_checkpoints WHERE position < $1")
                .bind(head)
                .fetch_one(pool)
                .await?;
        if status.len() == projections
            && status.iter().all(|s| s.position >= head)
            && reactors_behind == 0
        {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1_800),
            "the read side did not reach position {head}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bench(
    db: &Database,
    data_dir: &Path,
    read_side_nice: u8,
    args: &HttpBenchArgs,
) -> anyhow::Result<()> {
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(&db.pool)
        .await?;
    anyhow::ensure!(
        head > 0,
        "the bench database is empty: run `tessera bench rebuild` first (it generates the data)"
    );
    let platform = Platform::start(
        db.pool.clone(),
        crate::startup::log(db),
        PlatformOptions {
            projectors: !args.api_only,
            reactors: !args.api_only,
            stripe: None,
            jwt_secret: None,
            config: crate::http::ApiConfig {
                commands_per_second: 1_000,
                login_per_minute: 1_000,
                cache_capacity: if args.no_cache { 0 } else { 20_000 },
                aggregate_capacity: if args.no_aggregate_cache { 0 } else { 100_000 },
                ..crate::http::ApiConfig::default()
            },
            index_root: data_dir.join("bench-index"),
            projector_label: "bench http".into(),
            seal_key: None,
            read_side_nice,
            seal_every: None,
            master_key: db.master_key().map(str::to_owned),
            notifications: None,
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/api/v1", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::serve(
        listener,
        platform.state.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;

    // Wait until the read side has the whole log (a first start catches up).
    let projections = if args.api_only {
        0
    } else {
        tessera_projections::all(&data_dir.join("bench-index")).len()
    };
    settle(&db.pool, projections).await?;
    println!(
        "bench http: {head} events in the log; client and server on this machine; {} s per workload; read cache {}; aggregate cache {}; read side {}",
        args.seconds,
        if args.no_cache { "off" } else { "on" },
        if args.no_aggregate_cache { "off" } else { "on" },
        if args.api_only {
            "not in this process".to_owned()
        } else {
            format!("at nice {read_side_nice}")
        }
    );

    if args.only != Some(Workload::Holds) {
        let search = search_workload(&client, &base, &db.pool, args).await?;
        println!("\n{search}");
    }
    if args.only != Some(Workload::Search) {
        let holds =
            hold_workload(&platform.state, &client, &base, &db.pool, args, projections).await?;
        println!("\n{holds}");
    }

    let _ = stop.send(());
    server.await.context("server task")??;
    platform.stop().await;
    Ok(())
}

const WORDS: &[&str] = &[
    "tour", "food", "wine", "walk", "museum", "boat", "history", "market", "cooking", "hike",
    "night", "beach", "castle", "art", "bike", "lisbon", "paris", "rome", "kyoto", "tapas",
];
const KINDS: &[&str] = &["package", "experience"];

/// A few hundred distinct searches, the same list for the API and the baseline.
fn searches(categories: &[String], cities: &[(String, f64, f64)]) -> Vec<SearchCase> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..300)
        .map(|_| {
            let city = cities.choose(&mut rng).cloned();
            SearchCase {
                text: rng
                    .random_bool(0.7)
                    .then(|| (*WORDS.choose(&mut rng).unwrap_or(&"tour")).to_owned()),
                kind: rng
                    .random_bool(0.3)
                    .then(|| (*KINDS.choose(&mut rng).unwrap_or(&"tour")).to_owned()),
                category: rng
                    .random_bool(0.3)
                    .then(|| categories.choose(&mut rng).cloned())
                    .flatten(),
                max_price: rng
                    .random_bool(0.4)
                    .then(|| rng.random_range(5_000..50_000)),
                near: rng
                    .random_bool(0.2)
                    .then_some(city)
                    .flatten()
                    .map(|(_, lat, lon)| (lat, lon)),
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct SearchCase {
    text: Option<String>,
    kind: Option<String>,
    category: Option<String>,
    max_price: Option<i64>,
    near: Option<(f64, f64)>,
}

impl SearchCase {
    fn query_string(&self) -> String {
        let mut q = vec!["limit=20".to_owned()];
        if let Some(t) = &self.text {
            q.push(format!("q={t}"));
        }
        if let Some(k) = &self.kind {
            q.push(format!("kind={k}"));
        }
        if let Some(c) = &self.category {
            q.push(format!(
                "category={}",
                c.replace(' ', "%20").replace('&', "%26")
            ));
        }
        if let Some(p) = self.max_price {
            q.push(format!("max_price={p}"));
        }
        if let Some((lat, lon)) = self.near {
            q.push(format!("lat={lat}&lng={lon}&radius_km=50"));
        }
        q.join("&")
    }
}

async fn search_workload(
    client: &reqwest::Client,
    base: &str,
    pool: &PgPool,
    args: &HttpBenchArgs,
) -> anyhow::Result<String> {
    let (categories, cities) = catalog::categories_and_destinations(pool).await?;
    let cases = Arc::new(searches(&categories, &cities));

    let api = {
        let (client, base, cases) = (client.clone(), base.to_owned(), cases.clone());
        drive(args.search_clients, args.seconds, move |c, i| {
            let url = format!(
                "{base}/listings?{}",
                cases[(c * 7919 + i as usize) % cases.len()].query_string()
            );
            let client = client.clone();
            async move {
                match client.get(url).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => Outcome::Ok,
                        Err(_) => Outcome::Error,
                    },
                    _ => Outcome::Error,
                }
            }
        })
        .await
    };
    let raw = {
        let (pool, cases) = (pool.clone(), cases.clone());
        drive(args.search_clients, args.seconds, move |c, i| {
            let case = cases[(c * 7919 + i as usize) % cases.len()].clone();
            let pool = pool.clone();
            async move {
                let search = catalog::PlainSearch {
                    text: case.text,
                    kind: case.kind,
                    category: case.category,
                    max_price: case.max_price,
                    near: case.near,
                };
                let r = catalog::plain_search(&pool, &search).await;
                if r.is_ok() {
                    Outcome::Ok
                } else {
                    Outcome::Error
                }
            }
        })
        .await
    };
    Ok(format!(
        "search, {} concurrent clients\n  {}\n  {}\n  API p99 / raw p99: {:.2}x; target p99 < 5 ms",
        args.search_clients,
        api.line("API GET /listings (HTTP)"),
        raw.line("raw PostgreSQL ILIKE (sqlx)"),
        api.percentile(0.99) / raw.percentile(0.99)
    ))
}

/// How many slots the hold workload spreads over, and the seats of each.
const HOLD_SLOTS: usize = 1_000;
const HOLD_SLOT_SEATS: u32 = 10_000;

/// Schedules [`HOLD_SLOTS`] new slots of [`HOLD_SLOT_SEATS`] seats, one on each of as many
/// published listings (by their providers, through the commands). Every run, and its
/// baseline, then holds against the same fresh capacity:
/// nothing sells out during a run, and earlier runs do not leave it fewer slots with room.
async fn fresh_slots(
    state: &crate::http::AppState,
    pool: &PgPool,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    use tessera_commands::catalog::{Acting, schedule_slot};
    use tessera_commands::handler::CommandContext;
    use tessera_domain::values::{ListingId, UserId};

    let listings = catalog::published_listings(pool, HOLD_SLOTS as i64).await?;
    anyhow::ensure!(
        listings.len() >= 100,
        "only {} listings are published",
        listings.len()
    );
    let now = state.clock.now();
    let starts_at = now + chrono::TimeDelta::days(30);
    let mut slots = Vec::with_capacity(listings.len());
    for (listing, provider) in listings {
        let ctx = CommandContext::new(uuid::Uuid::new_v4(), format!("user:{provider}"), now);
        let (slot, _) = schedule_slot(
            &*state.store,
            Acting::Provider(UserId(provider)),
            ListingId(listing),
            starts_at,
            starts_at + chrono::TimeDelta::hours(3),
            HOLD_SLOT_SEATS,
            None,
            &ctx,
        )
        .await?;
        slots.push(slot.0);
    }
    Ok(slots)
}

async fn hold_workload(
    state: &crate::http::AppState,
    client: &reqwest::Client,
    base: &str,
    pool: &PgPool,
    args: &HttpBenchArgs,
    projections: usize,
) -> anyhow::Result<String> {
    let slots = Arc::new(fresh_slots(state, pool).await?);
    // Customers with tokens (logins are not measured).
    let mut tokens = Vec::new();
    for i in 0..args.hold_clients {
        let email = if i == 0 {
            "customer@tessera.test".to_owned()
        } else {
            format!("customer{i}@tessera.test")
        };
        let r: serde_json::Value = client
            .post(format!("{base}/auth/login"))
            .json(&json!({ "email": email, "password": tessera_fixtures::DEMO_PASSWORD }))
            .send()
            .await?
            .json()
            .await?;
        tokens.push(
            r["access_token"]
                .as_str()
                .with_context(|| format!("login of {email}: {r}"))?
                .to_owned(),
        );
    }
    let tokens = Arc::new(tokens);
    println!("holds: {} customers logged in; measuring", tokens.len());

    // One `POST /bookings` per call, each with its own idempotency key.
    let api_hold = |rate: Option<f64>| {
        let (client, base, slots, tokens) = (
            client.clone(),
            base.to_owned(),
            slots.clone(),
            tokens.clone(),
        );
        let run = uuid::Uuid::new_v4();
        drive_paced(args.hold_clients, args.seconds, rate, move |c, i| {
            let slot = slots[(c * 104_729 + i as usize * 7) % slots.len()];
            let request = client
                .post(format!("{base}/bookings"))
                .bearer_auth(&tokens[c])
                .header("idempotency-key", format!("bench-{run}-{c}-{i}"))
                .json(&json!({ "slot_id": slot, "seats": 1 }));
            async move {
                match request.send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => Outcome::Ok,
                    Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => Outcome::Refused,
                    _ => Outcome::Error,
                }
            }
        })
    };
    // Baseline: a CRUD hold on a scratch copy of the slots' seats.
    let raw_hold = |rate: Option<f64>| {
        let (pool, slots) = (pool.clone(), slots.clone());
        drive_paced(args.hold_clients, args.seconds, rate, move |c, i| {
            let slot = slots[(c * 104_729 + i as usize * 7) % slots.len()];
            let pool = pool.clone();
            async move {
                match crud_hold(&pool, slot, c).await {
                    Ok(true) => Outcome::Ok,
                    Ok(false) => Outcome::Refused,
                    Err(_) => Outcome::Error,
                }
            }
        })
    };
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_crud_bookings, bench_crud_slots;
         CREATE UNLOGGED TABLE bench_crud_slots (slot_id uuid PRIMARY KEY, remaining bigint NOT NULL);
         CREATE TABLE bench_crud_bookings (booking_id uuid PRIMARY KEY, slot_id uuid NOT NULL,
             customer text NOT NULL, seats int NOT NULL, placed_at timestamptz NOT NULL DEFAULT now());",
    )
    .execute(pool)
    .await?;
    sqlx::query("INSERT INTO bench_crud_slots SELECT unnest($1::uuid[]), $2")
        .bind(&*slots)
        .bind(i64::from(HOLD_SLOT_SEATS))
        .execute(pool)
        .await?;

    let mut report = format!(
        "holds, {} concurrent customers over {} slots",
        args.hold_clients,
        slots.len()
    );
    // Saturated: every client sends again as soon as it is answered.
    let mut saturated = None;
    if !args.paced_only {
        settle(pool, projections).await?;
        tracing::info!("holds: saturated API run");
        let api = api_hold(None).await;
        settle(pool, projections).await?;
        tracing::info!("holds: saturated baseline run");
        let raw = raw_hold(None).await;
        report += &format!(
            "\n  saturated (closed loop):\n  {}\n  {}\n  API p99 / raw p99: {:.2}x; target p99 < 20 ms",
            api.line("API POST /bookings (HTTP)"),
            raw.line("raw PostgreSQL CRUD hold (sqlx)"),
            api.percentile(0.99) / raw.percentile(0.99),
        );
        saturated = Some(api.throughput());
    }
    // Paced: the same clients offering half the API's saturated throughput (or the rate asked
    // for), both sides alike.
    let rate = match (args.paced_rate, saturated) {
        (Some(rate), _) => rate,
        (None, Some(throughput)) => throughput / 2.0,
        (None, None) => anyhow::bail!("--paced-only needs --paced-rate"),
    }
    .max(1.0);
    settle(pool, projections).await?;
    tracing::info!("holds: paced API run");
    let api_paced = api_hold(Some(rate)).await;
    settle(pool, projections).await?;
    tracing::info!("holds: paced baseline run");
    let raw_paced = raw_hold(Some(rate)).await;
    sqlx::raw_sql("DROP TABLE IF EXISTS bench_crud_bookings, bench_crud_slots")
        .execute(pool)
        .await?;
    report += &format!(
        "\n  paced at {rate:.0} req/s offered ({}; latency from the scheduled send):\n  {}\n  {}\n  API p99 / raw p99: {:.2}x",
        if args.paced_rate.is_some() {
            "as asked"
        } else {
            "half the API's saturated throughput"
        },
        api_paced.line("API POST /bookings (HTTP)"),
        raw_paced.line("raw PostgreSQL CRUD hold (sqlx)"),
        api_paced.percentile(0.99) / raw_paced.percentile(0.99),
    );
    Ok(report)
}

/// The baseline's hold in plain SQL: lock the slot row, check and decrement its seats, insert a
/// booking row; one transaction.
async fn crud_hold(pool: &PgPool, slot: uuid::Uuid, customer: usize) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let remaining: i64 =
        sqlx::query_scalar("SELECT remaining FROM bench_crud_slots WHERE slot_id = $1 FOR UPDATE")
            .bind(slot)
            .fetch_one(&mut *tx)
            .await?;
    if remaining < 1 {
        return Ok(false);
    }
    sqlx::query("UPDATE bench_crud_slots SET remaining = remaining - 1 WHERE slot_id = $1")
        .bind(slot)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO bench_crud_bookings (booking_id, slot_id, customer, seats) VALUES ($1, $2, $3, 1)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(slot)
    .bind(format!("c{customer}"))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
