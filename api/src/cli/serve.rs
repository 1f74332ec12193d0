//! `tessera up` and `tessera serve`: the platform in one process (API, projectors, reactors,
//! sealer) or the API alone, serving until SIGINT or SIGTERM, then draining.

#![allow(clippy::print_stdout)] // A command line prints its answers.

use anyhow::Context;

use crate::settings::Settings;
use crate::startup::db::Database;
use crate::startup::{
    FixtureLoad, Platform, PlatformOptions, Shutdown, listen, load_fixtures, log,
};

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Fixture scale loaded into an empty log (tiny, small, medium, large); `none` to skip.
    #[arg(long, default_value = "small")]
    pub fixtures: String,
}

pub async fn up(settings: &Settings, args: &UpArgs) -> anyhow::Result<()> {
    // Installed before anything else: a signal that arrives while starting (or right after the
    // "up" line) is then handled by stopping cleanly, never by the default kill.
    let mut shutdown = Shutdown::install()?;
    // The address first: a taken port fails here, with one line, before any other work.
    let listener = listen(settings.addr).await?;
    let db = Database::open(&settings.db_config("tessera")).await?;
    let where_ = match db.embedded_port() {
        Some(port) => format!(
            "embedded PostgreSQL on 127.0.0.1:{port} (data in {})",
            settings.data_dir.display()
        ),
        None => "PostgreSQL from DATABASE_URL".to_owned(),
    };
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(&db.pool)
        .await?;
    let mut loaded = false;
    if head == 0 && args.fixtures != "none" {
        println!(
            "The log is empty: loading the {} demo fixtures…",
            args.fixtures
        );
        load_fixtures(
            &db,
            &FixtureLoad {
                scale: args.fixtures.clone(),
                seed: 42,
                until: None,
                direct: false,
                quiet: false,
            },
        )
        .await?;
        loaded = true;
    }
    let slot = demo_slot(&db).await;
    let messages = match settings.smtp_url {
        Some(_) => format!(
            "{} (TESSERA_SMTP_URL)",
            settings.notifications().transport()?.describe()
        ),
        None => format!(
            "written as .eml files to {} (follow them: tessera mail tail)",
            settings.mail_dir().display()
        ),
    };
    let result = run_platform(
        &db,
        listener,
        settings.platform_options(true),
        &mut shutdown,
        |url| {
            println!(
                "Tessera is up: {where_}, migrations applied, projectors and reactors running."
            );
            println!(
                "API: {url}/api/v1 (OpenAPI: {url}/api/v1/openapi.json, metrics: {url}/metrics)"
            );
            println!("Console: {url}/console (sign in with a demo account below)");
            println!("Messages: {messages}");
            if loaded || head > 0 {
                print_demo(url, slot);
            }
            println!("Press Ctrl-C to stop.");
        },
    )
    .await;
    println!("Stopping…");
    db.close().await?;
    result
}

pub async fn serve(settings: &Settings) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install()?;
    let listener = listen(settings.addr).await?;
    let db = Database::open(&settings.db_config("tessera")).await?;
    let options = settings.platform_options(false);
    let result = run_platform(&db, listener, options, &mut shutdown, |url| {
        println!("Tessera API listening on {url}/api/v1");
        println!("Console: {url}/console");
    })
    .await;
    db.close().await?;
    result
}

/// Starts the platform's parts (all of them, or the API's own), serves HTTP until a signal, then
/// drains in-flight requests and stops the parts.
async fn run_platform(
    db: &Database,
    listener: tokio::net::TcpListener,
    options: PlatformOptions,
    shutdown: &mut Shutdown,
    announce: impl FnOnce(&str),
) -> anyhow::Result<()> {
    // `up` runs the read side too (at the niceness given), `serve` only the API.
    let platform = Platform::start(db.pool.clone(), log(db), options).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::serve(
        listener,
        platform.state.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    announce(&url);
    shutdown.wait().await;
    // Drain: stop accepting, finish in-flight requests, then stop the background parts.
    let _ = stop_tx.send(());
    let served = server.await;
    platform.stop().await;
    served.context("server task")?.context("server")?;
    Ok(())
}

/// Demo accounts and three copy-paste `curl` commands (search, place a booking, read it back).
fn print_demo(url: &str, slot: Option<String>) {
    let pw = tessera_fixtures::DEMO_PASSWORD;
    println!();
    println!("Demo accounts (password {pw}):");
    for role in ["customer", "provider", "admin", "auditor", "analyst"] {
        println!("  {role:<9} {role}@tessera.test");
    }
    let slot = slot.unwrap_or_else(|| "<a slot_id from GET /api/v1/listings/ID/slots>".into());
    let text = r#"
Try it (search; log in and hold two seats; read the booking with its timeline):
  curl -s '{URL}/api/v1/listings?q=lisbon&limit=3'

  TOKEN=$(curl -s {URL}/api/v1/auth/login -H 'content-type: application/json' -d '{"email":"customer@tessera.test","password":"{PW}"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  BOOKING=$(curl -s {URL}/api/v1/bookings -H "authorization: Bearer $TOKEN" -H "idempotency-key: $(date +%s%N)" -H 'content-type: application/json' -d '{"slot_id":"{SLOT}","seats":2}' | sed -E 's/.*"booking_id":"([^"]+)".*/\1/')

  curl -s "{URL}/api/v1/bookings/$BOOKING" -H "authorization: Bearer $TOKEN" -H 'tessera-min-position: 0'
"#;
    println!(
        "{}",
        text.replace("{URL}", url)
            .replace("{PW}", pw)
            .replace("{SLOT}", &slot)
    );
}

/// The least-booked slot a few days ahead (read from the log: the read models may still be
/// catching up at start), for the demo commands.
async fn demo_slot(db: &Database) -> Option<String> {
    sqlx::query_scalar(
        "SELECT s.data->>'slot_id' FROM events s
          WHERE s.event_type = 'SlotScheduled'
            AND (s.data->>'starts_at')::timestamptz > now() + interval '3 days'
            AND NOT EXISTS (SELECT 1 FROM events c
                             WHERE c.stream_id = s.stream_id AND c.event_type = 'SlotCancelled')
          ORDER BY (SELECT count(*) FROM events h WHERE h.stream_id = s.stream_id), s.position
          LIMIT 1",
    )
    .fetch_optional(&db.pool)
    .await
    .ok()
    .flatten()
}
