//! `tessera bench onsale`: a rush on **one** slot. A thousand concurrent clients (closed loop)
//! place one-seat holds over HTTP, each request with its own idempotency key, until the slot is
//! sold out: first a 10,000-seat slot, then a 100-seat one (the sell-out race). Measured in the
//! same run, on the same database, at the same concurrency:
//!
//! - **queued**: the API as shipped: holds wait in the slot's queue and are decided in batches
//!   (ADR 0014);
//! - **raced**: the same API with the queues turned off (each hold decided on the cached slot
//!   and raced with an optimistic append, re-decided on a conflict up to 30 times): what
//!   came before;
//! - **CRUD baseline**: the plain-SQL hold on one hot row (lock the slot row, check and
//!   decrement its seats, insert a booking row; one transaction), straight through sqlx with a
//!   pool as large as the API's.
//!
//! Each reports holds/s (seats sold over the time to sell out), p50/p99 of every answer,
//! contention failures (`request.contention`), busy answers (`service.busy`), and checks that
//! exactly the capacity was sold (the slot's state in the log, the baseline's row).
//!
//! Client and server share this machine's cores: the latencies include the client's own work.

#![allow(clippy::print_stdout)] // Benchmarks print their results.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use sqlx::PgPool;
use tessera_commands::handler::{CommandContext, load, stream_of};
use tessera_domain::slot::{SlotAggregate, SlotState};
use tessera_domain::values::{ListingId, SlotId, UserId};

use crate::http::AppState;
use crate::settings::Settings;
use crate::startup::db::Database;
use crate::startup::{FixtureLoad, Platform, PlatformOptions, load_fixtures};

#[derive(Debug, Clone, clap::Args)]
pub struct OnsaleBenchArgs {
    /// Concurrent clients, each sending its next hold as soon as the last is answered.
    #[arg(long, default_value_t = 1_000)]
    pub clients: usize,
    /// Seats of the large slot.
    #[arg(long, default_value_t = 10_000)]
    pub seats: u32,
    /// Seats of the sell-out race's slot.
    #[arg(long, default_value_t = 100)]
    pub race_seats: u32,
    /// Skip the raced (queues off) runs.
    #[arg(long)]
    pub no_raced: bool,
    /// Run the API without projectors and reactors in this process.
    #[arg(long)]
    pub api_only: bool,
}

/// What one rush measured.
#[derive(Default)]
struct Rush {
    latencies: Vec<Duration>,
    sold: usize,
    sold_out: usize,
    contention: usize,
    busy: usize,
    errors: usize,
    /// From the start to the last seat sold.
    sell_out: Duration,
    /// Some client stopped at [`GIVE_UP`] before the slot sold out.
    gave_up: bool,
}

impl Rush {
    fn percentile(&self, p: f64) -> f64 {
        let mut v: Vec<f64> = self.latencies.iter().map(Duration::as_secs_f64).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() as f64 - 1.0) * p).round() as usize] * 1_000.0
    }

    fn line(&self, what: &str, checked: &str) -> String {
        format!(
            "{what:<28} {:>7.0} holds/s   p50 {:>8.2} ms   p99 {:>8.2} ms   {} {:>6.2} s   {} sold, {} sold-out answers, {} contention, {} busy, {} errors; {checked}",
            self.sold as f64 / self.sell_out.as_secs_f64().max(1e-9),
            self.percentile(0.50),
            self.percentile(0.99),
            if self.gave_up {
                "GAVE UP, not sold out after"
            } else {
                "sold out in"
            },
            self.sell_out.as_secs_f64(),
            self.sold,
            self.sold_out,
            self.contention,
            self.busy,
            self.errors,
        )
    }
}

/// What one request came to.
enum Answer {
    Sold,
    SoldOut,
    Contention,
    Busy,
    Error,
}

/// How long a rush may take before its clients give up (the raced API does not sell a large
/// slot out in any reasonable time: that is what the queue is for).
const GIVE_UP: Duration = Duration::from_secs(60);

/// `clients` closed loops of `call` until each is told the slot is sold out (a contention or
/// busy answer is retried at once, as a client would with its key), or [`GIVE_UP`] has passed.
async fn rush<F, Fut>(clients: usize, call: F) -> Rush
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send,
{
    let call = Arc::new(call);
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (call, barrier) = (call.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let give_up = Instant::now() + GIVE_UP;
                let mut r = Rush::default();
                let mut last_sale = None;
                for i in 0.. {
                    if Instant::now() >= give_up {
                        r.gave_up = true;
                        break;
                    }
                    let sent = Instant::now();
                    let answer = call(c, i).await;
                    r.latencies.push(sent.elapsed());
                    match answer {
                        Answer::Sold => {
                            r.sold += 1;
                            last_sale = Some(Instant::now());
                        }
                        Answer::SoldOut => {
                            r.sold_out += 1;
                            break;
                        }
                        Answer::Contention => r.contention += 1,
                        Answer::Busy => r.busy += 1,
                        Answer::Error => {
                            r.errors += 1;
                            if r.errors > 100 {
                                break;
                            }
                        }
                    }
                }
                (r, last_sale)
            })
        })
        .collect();
    barrier.wait().await;
    let begun = Instant::now();
    let mut total = Rush::default();
    let mut last_sale = begun;
    for task in tasks {
        if let Ok((r, last)) = task.await {
            total.latencies.extend(r.latencies);
            total.sold += r.sold;
            total.sold_out += r.sold_out;
            total.contention += r.contention;
            total.busy += r.busy;
            total.errors += r.errors;
            total.gave_up |= r.gave_up;
            last_sale = last_sale.max(last.unwrap_or(begun));
        }
    }
    total.sell_out = last_sale - begun;
    total
}

pub async fn run(settings: &Settings, args: &OnsaleBenchArgs) -> anyhow::Result<()> {
    let db = Database::open(&settings.db_config("tessera_bench_onsale")).await?;
    let result = bench(&db, &settings.data_dir, settings, args).await;
    db.close().await?;
    result
}

async fn bench(
    db: &Database,
    data_dir: &Path,
    settings: &Settings,
    args: &OnsaleBenchArgs,
) -> anyhow::Result<()> {
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(&db.pool)
        .await?;
    if head == 0 {
        load_fixtures(
            db,
            &FixtureLoad {
                scale: "tiny".into(),
                seed: 7,
                until: None,
                direct: false,
                quiet: true,
            },
        )
        .await?;
    }
    let platform = Platform::start(
        db.pool.clone(),
        crate::startup::log(db),
        PlatformOptions {
            projectors: !args.api_only,
            reactors: !args.api_only,
            stripe: None,
            jwt_secret: None,
            config: crate::http::ApiConfig {
                commands_per_second: 1_000_000,
                login_per_minute: 1_000,
                ..settings.api_config()
            },
            index_root: data_dir.join("bench-onsale-index"),
            projector_label: "bench onsale".into(),
            seal_key: None,
            read_side_nice: settings.read_side_nice,
            seal_every: None,
            master_key: db.master_key().map(str::to_owned),
            notifications: None,
        },
    )
    .await?;
    // The same API twice: as shipped (queued), and with the queues off (raced).
    let queued = platform.state.clone();
    let mut raced = platform.state.clone();
    raced.queues = None;
    let (queued_base, stop_queued, queued_server) = serve(queued.clone()).await?;
    let (raced_base, stop_raced, raced_server) = serve(raced).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;

    let tokens = Arc::new(customer_tokens(&client, &queued_base).await?);
    let (listing, provider) = published_listing(&db.pool).await?;
    let pool_size = db.pool.options().get_max_connections();
    println!(
        "bench onsale: {} concurrent clients (closed loop) on one slot; {} customers; API pool and baseline pool {pool_size} connections; read side {}",
        args.clients,
        tokens.len(),
        if args.api_only {
            "not in this process".to_owned()
        } else {
            format!("at nice {}", settings.read_side_nice)
        }
    );

    for seats in [args.seats, args.race_seats] {
        println!("\none slot of {seats} seats, {} clients:", args.clients);
        let mut runs = vec![("API queued (HTTP)", &queued_base)];
        if !args.no_raced {
            runs.push(("API raced, queues off (HTTP)", &raced_base));
        }
        for (what, base) in runs {
            let slot = new_slot(&queued, listing, provider, seats).await?;
            let r = rush(args.clients, hold_over_http(&client, base, &tokens, slot)).await;
            let taken = taken(&queued, slot).await?;
            let checked = if taken == seats && r.sold == seats as usize {
                "exactly the capacity sold".to_owned()
            } else if r.gave_up && taken as usize == r.sold {
                format!("{taken} of {seats} seats taken in the log, as answered")
            } else {
                format!("MISMATCH: the log holds {taken} seats taken")
            };
            println!("  {}", r.line(what, &checked));
        }
        let r = crud_rush(&db.pool, args.clients, seats).await?;
        println!("  {}", r.0.line("raw PostgreSQL CRUD hold", &r.1));
    }

    let _ = stop_queued.send(());
    let _ = stop_raced.send(());
    queued_server.await.context("server task")??;
    raced_server.await.context("server task")??;
    platform.stop().await;
    Ok(())
}

type Served = (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

async fn serve(state: AppState) -> anyhow::Result<Served> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/api/v1", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::serve(listener, state, async {
        let _ = stopped.await;
    }));
    Ok((base, stop, server))
}

/// The fixtures' customers, logged in (logins are not measured).
async fn customer_tokens(client: &reqwest::Client, base: &str) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::new();
    for i in 0..20 {
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
        match r["access_token"].as_str() {
            Some(t) => tokens.push(t.to_owned()),
            None if tokens.is_empty() => anyhow::bail!("login of {email}: {r}"),
            None => break,
        }
    }
    Ok(tokens)
}

/// A published listing and its provider, once the read side has one.
async fn published_listing(pool: &PgPool) -> anyhow::Result<(ListingId, UserId)> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let listings = tessera_projections::models::catalog::published_listings(pool, 1).await?;
        if let Some((listing, provider)) = listings.first() {
            return Ok((ListingId(*listing), UserId(*provider)));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no published listing in the read model"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn new_slot(
    state: &AppState,
    listing: ListingId,
    provider: UserId,
    seats: u32,
) -> anyhow::Result<SlotId> {
    use tessera_commands::catalog::{Acting, schedule_slot};
    let now = state.clock.now();
    let starts_at = now + chrono::TimeDelta::days(30);
    let ctx = CommandContext::new(uuid::Uuid::new_v4(), format!("user:{}", provider.0), now);
    let (slot, _) = schedule_slot(
        &*state.store,
        Acting::Provider(provider),
        listing,
        starts_at,
        starts_at + chrono::TimeDelta::hours(3),
        seats,
        None,
        &ctx,
    )
    .await?;
    Ok(slot)
}

/// Seats taken on `slot`, as its whole stream says.
async fn taken(state: &AppState, slot: SlotId) -> anyhow::Result<u32> {
    let loaded = load::<SlotAggregate>(
        &*state.store,
        stream_of::<SlotAggregate>(slot),
        uuid::Uuid::nil(),
    )
    .await?;
    match loaded.state {
        SlotState::Scheduled(s) => Ok(s.taken()),
        SlotState::New => anyhow::bail!("slot {slot} does not exist"),
    }
}

/// One `POST /bookings` of one seat per call, with a new idempotency key (a contention or busy
/// answer is retried with the same key, as the API asks).
fn hold_over_http(
    client: &reqwest::Client,
    base: &str,
    tokens: &Arc<Vec<String>>,
    slot: SlotId,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn Future<Output = Answer> + Send>> + Send + Sync + 'static
{
    let (client, url, tokens) = (client.clone(), format!("{base}/bookings"), tokens.clone());
    let run = uuid::Uuid::new_v4();
    move |c, i| {
        let request = client
            .post(&url)
            .bearer_auth(&tokens[c % tokens.len()])
            .header("idempotency-key", format!("onsale-{run}-{c}-{i}"))
            .json(&json!({ "slot_id": slot.0, "seats": 1 }));
        Box::pin(async move {
            let Ok(response) = request.send().await else {
                return Answer::Error;
            };
            let status = response.status();
            let code = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|b| b["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            match (status.as_u16(), code.as_str()) {
                (201, _) => Answer::Sold,
                (409, "slot.sold_out") => Answer::SoldOut,
                (409, "request.contention") => Answer::Contention,
                (503, "service.busy") => Answer::Busy,
                _ => Answer::Error,
            }
        })
    }
}

/// The baseline: the same rush on one row of a scratch table, in plain SQL.
async fn crud_rush(pool: &PgPool, clients: usize, seats: u32) -> anyhow::Result<(Rush, String)> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_onsale_bookings, bench_onsale_slots;
         CREATE TABLE bench_onsale_slots (slot_id uuid PRIMARY KEY, remaining bigint NOT NULL);
         CREATE TABLE bench_onsale_bookings (booking_id uuid PRIMARY KEY, slot_id uuid NOT NULL,
             customer text NOT NULL, seats int NOT NULL, placed_at timestamptz NOT NULL DEFAULT now());",
    )
    .execute(pool)
    .await?;
    let slot = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO bench_onsale_slots VALUES ($1, $2)")
        .bind(slot)
        .bind(i64::from(seats))
        .execute(pool)
        .await?;
    let p = pool.clone();
    let r = rush(clients, move |c, _| {
        let pool = p.clone();
        async move {
            match crud_hold(&pool, slot, c).await {
                Ok(true) => Answer::Sold,
                Ok(false) => Answer::SoldOut,
                Err(_) => Answer::Error,
            }
        }
    })
    .await;
    let (sold, remaining): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bench_onsale_bookings), (SELECT remaining FROM bench_onsale_slots)",
    )
    .fetch_one(pool)
    .await?;
    sqlx::raw_sql("DROP TABLE IF EXISTS bench_onsale_bookings, bench_onsale_slots")
        .execute(pool)
        .await?;
    let checked = if sold == i64::from(seats) && remaining == 0 {
        "exactly the capacity sold".to_owned()
    } else {
        format!("MISMATCH: {sold} booking rows, {remaining} remaining")
    };
    Ok((r, checked))
}

/// Lock the slot row, check and decrement its seats, insert a booking row; one transaction.
async fn crud_hold(pool: &PgPool, slot: uuid::Uuid, customer: usize) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let remaining: i64 = sqlx::query_scalar(
        "SELECT remaining FROM bench_onsale_slots WHERE slot_id = $1 FOR UPDATE",
    )
    .bind(slot)
    .fetch_one(&mut *tx)
    .await?;
    if remaining < 1 {
        return Ok(false);
    }
    sqlx::query("UPDATE bench_onsale_slots SET remaining = remaining - 1 WHERE slot_id = $1")
        .bind(slot)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO bench_onsale_bookings (booking_id, slot_id, customer, seats) VALUES ($1, $2, $3, 1)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(slot)
    .bind(format!("c{customer}"))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
