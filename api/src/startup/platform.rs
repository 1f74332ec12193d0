//! Starting the platform's moving parts in one process: the API state (token keys, projection
//! positions, payment gateway), and optionally projectors, reactors and the deadline clock.
//! `tessera up` starts everything; `tessera serve` only what the API itself needs.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tessera_commands::gateway::{PaymentGateway, SimulatedGateway, StripeGateway};
use tessera_commands::handler::AggregateCache;
use tessera_commands::reactor::{ReactorRunner, fire_due_deadlines, handle_gateway_event_cached};
use tessera_log::clock::{Clock, SystemClock};
use tessera_log::pii::{PiiStore, Vault};
use tessera_log::store::EventStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::auth::TokenKeys;
use crate::http::positions::Positions;
use crate::http::{ApiConfig, AppState, StateParts};

/// Slots the read side keeps caught up for releasing seats (expiries, slot cancellations).
const RELEASED_SLOTS_CACHED: u64 = 10_000;

/// Stripe credentials; without them payments go through the simulated gateway.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: String,
    pub webhook_secret: String,
    /// Stripe's API root; tests aim it at a local fake.
    pub api_base: Option<String>,
}

/// What to run besides the API state.
#[derive(Debug, Clone)]
pub struct PlatformOptions {
    pub projectors: bool,
    pub reactors: bool,
    pub stripe: Option<StripeConfig>,
    pub jwt_secret: Option<String>,
    pub config: ApiConfig,
    pub index_root: PathBuf,
    pub projector_label: String,
    /// Ed25519 seed (hex) of the seal key; default: the one generated for the database.
    pub seal_key: Option<String>,
    /// Run the sealing process at this interval.
    pub seal_every: Option<Duration>,
    /// Niceness (0..=19) of the read side's threads (projectors, reactors, the deadline clock):
    /// above 0, the API's requests win the CPU from them, and under load projections lag
    /// instead of commands waiting. See [`ReadSide`].
    pub read_side_nice: u8,
    /// Master key (hex) of the personal-data vault; default: the one generated for the database.
    pub master_key: Option<String>,
    /// Messages to people (with the reactors): the notification reactor and the deliverer.
    pub notifications: Option<NotificationOptions>,
}

/// Where messages go and what they link to.
#[derive(Debug, Clone)]
pub struct NotificationOptions {
    /// SMTP server; without it messages become `.eml` files in `mail_dir`.
    pub smtp_url: Option<String>,
    pub mail_dir: PathBuf,
    /// The sender, `Name <address>`.
    pub from: String,
    /// The platform's public address, for links.
    pub public_url: String,
    pub reminder_before: Duration,
    pub max_attempts: u32,
    /// A webhook endpoint failing this long is disabled (its owner told).
    pub webhook_disable_after: Duration,
}

impl NotificationOptions {
    /// Messages as files in `mail_dir`, the rest as shipped.
    pub fn files(mail_dir: PathBuf) -> Self {
        Self {
            smtp_url: None,
            mail_dir,
            from: "Tessera <no-reply@tessera.test>".into(),
            public_url: "http://127.0.0.1:8080".into(),
            reminder_before: Duration::from_secs(24 * 3600),
            max_attempts: 8,
            webhook_disable_after: Duration::from_secs(24 * 3600),
        }
    }

    /// The transport these options name.
    pub fn transport(&self) -> anyhow::Result<Arc<dyn tessera_notify::Transport>> {
        Ok(match &self.smtp_url {
            Some(url) => Arc::new(
                tessera_notify::Smtp::from_url(url)
                    .map_err(|e| anyhow::anyhow!("TESSERA_SMTP_URL: {e}"))?,
            ),
            None => Arc::new(tessera_notify::MailDir {
                dir: self.mail_dir.clone(),
            }),
        })
    }
}

/// The running parts; [`Platform::stop`] stops them all.
#[derive(Debug)]
pub struct Platform {
    pub state: AppState,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    read_side: Option<ReadSide>,
    sealer: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// The process's Prometheus recorder (installed once; every server in the process shares it).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only this one's"
                );
            }
            handle
        })
        .clone()
}

impl Platform {
    pub async fn start(
        pool: PgPool,
        store: Arc<dyn EventStore>,
        options: PlatformOptions,
    ) -> anyhow::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        // Everything in the platform sees personal data through the vault.
        let vault = Vault::load(pool.clone(), options.master_key.as_deref())
            .await
            .context("cannot open the personal-data vault")?;
        let store: Arc<dyn EventStore> = Arc::new(PiiStore::new(store, vault.clone()));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // Hot aggregates' states and turns, one set for the process: holds (API), releases
        // (reactors, deadlines) and payments on a slot take their turns on the same lock.
        let aggregates = (options.config.aggregate_capacity > 0)
            .then(|| AggregateCache::new(options.config.aggregate_capacity));

        let (gateway, stripe): (Arc<dyn PaymentGateway>, Option<Arc<StripeGateway>>) =
            match &options.stripe {
                Some(s) => {
                    let g = Arc::new(
                        StripeGateway::new(&s.secret_key, &s.webhook_secret, s.api_base.as_deref())
                            .context("cannot set up the Stripe client")?,
                    );
                    (g.clone(), Some(g))
                }
                None => {
                    let (g, mut outcomes) = SimulatedGateway::new();
                    // Its book outlives the process: `tessera ledger check` reconciles with it.
                    let g = g.with_book(pool.clone());
                    // The simulated provider's outcomes arrive like webhooks, handled here.
                    let (store, clock, aggregates, mut stopped) = (
                        store.clone(),
                        clock.clone(),
                        aggregates.clone(),
                        stopped.clone(),
                    );
                    // Payouts to providers' banks: once a week per account, checked hourly.
                    {
                        let (g, clock, mut stopped) = (g.clone(), clock.clone(), stopped.clone());
                        tasks.push(tokio::spawn(async move {
                            let mut hourly = tokio::time::interval(Duration::from_secs(3600));
                            loop {
                                tokio::select! {
                                    _ = stopped.changed() => break,
                                    _ = hourly.tick() => {}
                                }
                                if let Err(e) = g.run_payouts(clock.now()).await {
                                    tracing::warn!(error = %e, "simulated payout run failed; next hour");
                                }
                            }
                        }));
                    }
                    tasks.push(tokio::spawn(async move {
                        loop {
                            let event = tokio::select! {
                                _ = stopped.changed() => break,
                                event = outcomes.recv() => match event {
                                    Some(event) => event,
                                    None => break,
                                },
                            };
                            // Like a webhook, the outcome can overtake the append that records
                            // the payment: it is redelivered until it applies (bounded).
                            let (store, clock, aggregates) =
                                (store.clone(), clock.clone(), aggregates.clone());
                            tokio::spawn(async move {
                                let mut attempts = 0;
                                while let Err(e) = handle_gateway_event_cached(
                                    &*store,
                                    aggregates.as_ref(),
                                    &event,
                                    clock.now(),
                                )
                                .await
                                {
                                    attempts += 1;
                                    if attempts >= 250 {
                                        tracing::error!(error = %e, ?event, "simulated payment outcome failed");
                                        break;
                                    }
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            });
                        }
                    }));
                    (Arc::new(g), None)
                }
            };

        let keys = TokenKeys::load(
            &pool,
            options.jwt_secret.as_deref(),
            options.config.access_ttl,
            options.config.refresh_ttl,
        )
        .await
        .context("cannot load the token signing key")?;
        let seal_key = tessera_log::audit::SealKey::load(&pool, options.seal_key.as_deref())
            .await
            .context("cannot load the seal key")?;
        let seal_public_key = seal_key.public_key();
        // The sealer stops last, after everything that appends (reactors included), so its
        // final round leaves nothing unsealed.
        let sealer = options.seal_every.map(|every| {
            let (stop_sealer, sealer_stopped) = watch::channel(false);
            let task = tokio::spawn(tessera_log::audit::run_sealer(
                pool.clone(),
                seal_key,
                every,
                sealer_stopped,
            ));
            (stop_sealer, task)
        });
        let (positions, follower) =
            Positions::start(pool.clone(), options.config.read_wait, stopped.clone()).await?;
        tasks.push(follower);

        let notify = options
            .notifications
            .as_ref()
            .map(|n| tessera_notify::NotifyConfig {
                from: n.from.clone(),
                reminder_before: chrono::TimeDelta::from_std(n.reminder_before)
                    .unwrap_or(chrono::TimeDelta::hours(24)),
                ..tessera_notify::NotifyConfig::new(&n.public_url, keys.unsubscribe_key().to_vec())
            });
        let read_side = if options.projectors || options.reactors {
            Some(
                ReadSide::start(
                    &pool,
                    ReadSideParts {
                        projectors: options
                            .projectors
                            .then(|| (options.index_root.clone(), options.projector_label.clone())),
                        reactors: options.reactors,
                        master_key: options.master_key.clone(),
                        gateway: gateway.clone(),
                        clock: clock.clone(),
                        slots: aggregates.clone(),
                        dispute_window: options.config.dispute_window,
                        notifications: match &options.notifications {
                            Some(n) => Some(NotifyParts {
                                transport: n.transport()?,
                                config: notify.clone().ok_or_else(|| {
                                    anyhow::anyhow!("notifications without their configuration")
                                })?,
                                policy: tessera_notify::RetryPolicy {
                                    max_attempts: n.max_attempts as i32,
                                    ..tessera_notify::RetryPolicy::default()
                                },
                                webhooks: tessera_notify::webhooks::WebhookPolicy {
                                    disable_after: chrono::TimeDelta::from_std(
                                        n.webhook_disable_after,
                                    )
                                    .unwrap_or(chrono::TimeDelta::hours(24)),
                                    ..tessera_notify::webhooks::WebhookPolicy::default()
                                },
                                webhook_urls: options.config.webhook_urls,
                            }),
                            None => None,
                        },
                    },
                    options.read_side_nice,
                    stopped.clone(),
                )
                .await?,
            )
        } else {
            None
        };

        let tickets = tessera_commands::tickets::TicketKey::load(&pool)
            .await
            .context("cannot load the ticket key")?;
        let state = AppState::new(StateParts {
            pool,
            store,
            gateway,
            stripe,
            clock,
            keys,
            positions,
            index_root: options.index_root,
            metrics: Some(prometheus()),
            config: options.config,
            seal_public_key,
            tickets,
            vault,
            aggregates,
            notify,
        });
        // Tokens of erased users and revoked roles stop working as soon as the log says so.
        tasks.push(state.principals.follow(state.pool.clone(), stopped.clone()));
        Ok(Self {
            state,
            stop,
            tasks,
            read_side,
            sealer,
        })
    }

    /// Stops projectors, reactors and followers and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        if let Some(read_side) = self.read_side {
            read_side.stopped().await;
        }
        if let Some((stop, task)) = self.sealer {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

/// What the read side runs.
struct ReadSideParts {
    /// The search index's root and this projector's label, when projectors run.
    projectors: Option<(PathBuf, String)>,
    reactors: bool,
    master_key: Option<String>,
    gateway: Arc<dyn PaymentGateway>,
    clock: Arc<dyn Clock>,
    /// The process's aggregate cache (its turns are shared with the API's holds).
    slots: Option<AggregateCache>,
    /// How long providers' shares stay held after their slots end.
    dispute_window: Duration,
    notifications: Option<NotifyParts>,
}

/// The notification reactor's settings and the deliverer's transport.
struct NotifyParts {
    config: tessera_notify::NotifyConfig,
    transport: Arc<dyn tessera_notify::Transport>,
    policy: tessera_notify::RetryPolicy,
    webhooks: tessera_notify::webhooks::WebhookPolicy,
    webhook_urls: tessera_notify::webhooks::UrlPolicy,
}

/// Projectors, reactors and the deadline clock on a tokio runtime of their own, in threads of
/// lower priority, with their own connection pool and their own store (so their own
/// group-commit writer).
///
/// Sharing the API's runtime made every request queue behind projection work on the same two
/// worker threads; and a pool or store cannot be shared across runtimes without the same
/// problem, because a connection's readiness is delivered by the runtime that opened it. The
/// read side is a separate process in all but address space: what it needs it opens itself,
/// inside its runtime, from the API pool's connection options.
#[derive(Debug)]
struct ReadSide {
    done: tokio::sync::oneshot::Receiver<()>,
}

impl ReadSide {
    async fn start(
        pool: &PgPool,
        parts: ReadSideParts,
        nice: u8,
        stopped: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        // Named apart in `pg_stat_activity`, so an operator sees which backends are the read side.
        // Generic plans only: the read side's statements (tail reads past a position, loads and
        // upserts of a batch's rows) are one shape whatever their parameters, and PostgreSQL
        // planned the tail read afresh on every execution (1,879 of 1,879 in a paced run, 492 ms
        // of planning for 209 ms of executing) because a plan for the position at hand always
        // looked cheaper than the generic one.
        let connect = (*pool.connect_options()).clone().options([
            ("application_name", "tessera-read-side"),
            ("plan_cache_mode", "force_generic_plan"),
        ]);
        let max_connections = pool.options().get_max_connections();
        let (started_tx, started) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tessera-read-side".into())
            .spawn(move || {
                lower_priority(nice);
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("tessera-read")
                    .on_thread_start(move || lower_priority(nice))
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = started_tx.send(Err(e.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let pool = sqlx::postgres::PgPoolOptions::new()
                        .max_connections(max_connections)
                        .acquire_timeout(Duration::from_secs(30))
                        .connect_lazy_with(connect);
                    match run_read_side(pool, parts, stopped).await {
                        Ok(tasks) => {
                            let _ = started_tx.send(Ok(()));
                            for task in tasks {
                                let _ = task.await;
                            }
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                        }
                    }
                });
                // Outside any async context, as dropping a runtime must be.
                runtime.shutdown_timeout(Duration::from_secs(10));
                let _ = done_tx.send(());
            })
            .context("cannot start the read side's thread")?;
        started
            .await
            .context("the read side's thread ended before it started")??;
        Ok(Self { done })
    }

    /// Waits (bounded) until the read side has stopped, after the platform's stop signal.
    async fn stopped(self) {
        let _ = tokio::time::timeout(Duration::from_secs(30), self.done).await;
    }
}

/// From 17:00 UTC on: each provider with slots tomorrow gets tomorrow's summary (once).
async fn daily_summaries(
    store: &dyn EventStore,
    pool: &PgPool,
    vault: &Vault,
    config: &tessera_notify::NotifyConfig,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    use chrono::Timelike;
    if now.hour() < 17 {
        return Ok(());
    }
    let day = now.date_naive() + chrono::Days::new(1);
    let from = day.and_time(chrono::NaiveTime::MIN).and_utc();
    let slots = tessera_projections::models::catalog::slots_starting_between(
        pool,
        from,
        from + chrono::TimeDelta::days(1),
    )
    .await?;
    for (provider, slots) in slots
        .chunk_by(|a, b| a.provider_id == b.provider_id)
        .map(|c| (c[0].provider_id, c))
    {
        let slots: Vec<tessera_notify::direct::SummarySlot> = slots
            .iter()
            .map(|s| tessera_notify::direct::SummarySlot {
                title: s.title.clone(),
                starts_at: s.starts_at,
                capacity: s.capacity,
                confirmed: s.confirmed,
                held: s.held,
            })
            .collect();
        tessera_notify::direct::send_daily_summary(
            store,
            pool,
            vault,
            config,
            tessera_domain::values::UserId(provider),
            day,
            &slots,
            now,
        )
        .await?;
    }
    Ok(())
}

/// Lowers the calling thread's priority to `nice` (Linux keeps a nice value per thread). A
/// failure leaves it as it was: the read side is then only less polite.
/// Runs `run` now and then every hour until `stopped` changes.
fn every_hour<F, Fut>(mut stopped: watch::Receiver<bool>, mut run: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = hourly.tick() => {}
            }
            run().await;
        }
    })
}

/// Extends every running schedule's slots to its horizon (creating nothing twice).
async fn generate_schedules(
    store: &dyn tessera_log::store::EventStore,
    pool: &sqlx::PgPool,
    now: chrono::DateTime<chrono::Utc>,
) {
    let ids = match tessera_projections::models::catalog::active_schedules(pool).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "no schedule generation this hour");
            return;
        }
    };
    for id in ids {
        let ctx = tessera_commands::handler::CommandContext::new(
            tessera_log::clock::new_command_id(),
            "system:schedules",
            now,
        );
        let id = tessera_domain::values::ScheduleId(id);
        match tessera_commands::schedules::generate(store, id, &ctx).await {
            Ok(g) if !g.created.is_empty() => {
                tracing::info!(schedule = %id, created = g.created.len(), "slots generated");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, schedule = %id, "generation failed; next hour"),
        }
    }
}

pub fn lower_priority(nice: u8) {
    if nice == 0 {
        return;
    }
    // thread-priority maps a value p of 0..=99 to the niceness (39 (1 - p/99)) - 20, computed in
    // f32 and truncated; niceness grows by less than 1 per step of p, so every niceness has one.
    use thread_priority::unix::{NICENESS_MAX, NICENESS_MIN};
    let span = f32::from(NICENESS_MAX.abs() + NICENESS_MIN.abs());
    let niceness = |p: u8| (span * (1f32 - f32::from(p) / 99f32)) as i8 + NICENESS_MAX;
    let wanted = nice.min(19) as i8;
    let p = (0..=99u8)
        .rev()
        .find(|p| niceness(*p) >= wanted)
        .unwrap_or(0);
    let set = thread_priority::ThreadPriorityValue::try_from(p)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            thread_priority::set_current_thread_priority(
                thread_priority::ThreadPriority::Crossplatform(v),
            )
            .map_err(|e| e.to_string())
        });
    if let Err(e) = set {
        tracing::warn!(error = %e, nice, "cannot lower the read side's priority");
    }
}

/// Starts the read side's tasks on the current (the read side's) runtime.
async fn run_read_side(
    pool: PgPool,
    parts: ReadSideParts,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let ReadSideParts {
        projectors,
        reactors,
        master_key,
        gateway,
        clock,
        slots,
        dispute_window,
        notifications,
    } = parts;
    let vault = Vault::load(pool.clone(), master_key.as_deref())
        .await
        .context("cannot open the personal-data vault")?;
    let store: Arc<dyn EventStore> =
        Arc::new(PiiStore::new(super::log_over(pool.clone()), vault.clone()));
    if let Some((index_root, label)) = projectors {
        let projector = tessera_projections::Projector::new(
            pool.clone(),
            store.clone(),
            tessera_projections::all(&index_root),
            tessera_projections::ProjectorOptions {
                label,
                ..tessera_projections::ProjectorOptions::default()
            },
        );
        let stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = projector.run(stopped).await {
                tracing::error!(error = %e, "projector stopped with an error");
            }
        }));
    }

    if reactors {
        let runner = ReactorRunner {
            store: store.clone(),
            pool: pool.clone(),
            clock: clock.clone(),
        };
        // The slots whose seats reactors and deadlines give back, caught up between releases
        // instead of replayed whole for each (a busy slot has thousands of events).
        let slots = slots.unwrap_or_else(|| AggregateCache::new(RELEASED_SLOTS_CACHED));
        let window = chrono::TimeDelta::from_std(dispute_window)
            .unwrap_or(tessera_commands::reactor::DEFAULT_DISPUTE_WINDOW);
        let mut reactors = tessera_commands::reactor::all_with(
            &store,
            &pool,
            gateway.clone(),
            Some(slots.clone()),
            window,
        );
        // Messages: derived into the outbox by a reactor, delivered by the deliverer.
        if let Some(n) = notifications {
            reactors.push(Arc::new(tessera_notify::NotificationReactor::new(
                store.clone(),
                pool.clone(),
                vault.clone(),
                n.config.clone(),
            )));
            reactors.push(Arc::new(tessera_notify::webhooks::WebhookReactor {
                store: store.clone(),
                pool: pool.clone(),
                max_age: n.config.max_age,
            }));
            let webhooks = tessera_notify::webhooks::WebhookDeliverer {
                pool: pool.clone(),
                client: tessera_notify::webhooks::client(n.webhook_urls)
                    .context("cannot build the webhook client")?,
                clock: clock.clone(),
                policy: n.webhooks,
                on_disabled: Some(Arc::new(tessera_notify::direct::TellOwner {
                    store: store.clone(),
                    pool: pool.clone(),
                    vault: vault.clone(),
                    config: n.config.clone(),
                    clock: clock.clone(),
                })),
            };
            tasks.push(tokio::spawn(
                webhooks.run(Duration::from_secs(1), stopped.clone()),
            ));
            // Providers' daily summaries: from 17:00 UTC, tomorrow's slots (once per provider
            // and day, by the message's derived id), checked hourly.
            {
                let (store, pool, vault, clock, config, mut stopped) = (
                    store.clone(),
                    pool.clone(),
                    vault.clone(),
                    clock.clone(),
                    n.config.clone(),
                    stopped.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
                    loop {
                        tokio::select! {
                            _ = stopped.changed() => break,
                            _ = hourly.tick() => {}
                        }
                        if let Err(e) =
                            daily_summaries(&*store, &pool, &vault, &config, clock.now()).await
                        {
                            tracing::warn!(error = %e, "daily summaries not sent; next hour");
                        }
                    }
                }));
            }
            let deliverer = tessera_notify::Deliverer {
                pool: pool.clone(),
                transport: n.transport,
                clock: clock.clone(),
                policy: n.policy,
                from: n.config.from,
                vault: vault.clone(),
            };
            tasks.push(tokio::spawn(
                deliverer.run(Duration::from_secs(1), stopped.clone()),
            ));
        }
        for reactor in reactors {
            let (runner, stopped) = (runner.clone(), stopped.clone());
            tasks.push(tokio::spawn(
                async move { runner.run(reactor, stopped).await },
            ));
        }
        // Recurring schedules: each hour, every running schedule's slots up to its horizon.
        {
            let (store, pool, clock) = (store.clone(), pool.clone(), clock.clone());
            tasks.push(every_hour(stopped.clone(), move || {
                let (store, pool, now) = (store.clone(), pool.clone(), clock.now());
                async move { generate_schedules(&*store, &pool, now).await }
            }));
        }
        // Commission invoices: each hour, every provider with commission in the last two
        // months gets its past months invoiced (its stream decides; a month is invoiced once).
        {
            let (store, pool, clock, mut stopped) =
                (store.clone(), pool.clone(), clock.clone(), stopped.clone());
            let issuer = tessera_commands::receipts::Issuer::default();
            tasks.push(tokio::spawn(async move {
                let mut hourly = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tokio::select! {
                        _ = stopped.changed() => break,
                        _ = hourly.tick() => {}
                    }
                    let now = clock.now();
                    let providers =
                        match tessera_projections::models::payments::providers_with_commission(
                            &pool,
                            now - chrono::TimeDelta::days(62),
                        )
                        .await
                        {
                            Ok(p) => p,
                            Err(e) => {
                                tracing::warn!(error = %e, "no invoice run this hour");
                                continue;
                            }
                        };
                    for provider in providers {
                        let ctx = tessera_commands::handler::CommandContext::new(
                            tessera_log::clock::new_command_id(),
                            "system:invoices",
                            now,
                        );
                        if let Err(e) = tessera_commands::receipts::issue_due_invoices(
                            &*store,
                            &issuer,
                            tessera_domain::values::UserId(provider),
                            &ctx,
                        )
                        .await
                        {
                            tracing::warn!(error = %e, %provider, "invoicing failed; next hour");
                        }
                    }
                }
            }));
        }
        // Deadlines (lapsed holds, ended slots) fire when the clock passes them.
        let (store, pool, clock, mut stopped) =
            (store.clone(), pool.clone(), clock.clone(), stopped.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {}
                }
                if let Err(e) = fire_due_deadlines(&*store, &pool, Some(&slots), clock.now()).await
                {
                    tracing::error!(error = %e, "firing deadlines failed");
                }
            }
        }));
    }

    Ok(tasks)
}

#[cfg(test)]
mod tests {
    /// The calling thread's nice value, from `/proc/thread-self/stat` (its 19th field).
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let after_name = &stat[stat.rfind(')').expect("name ends") + 1..];
        after_name
            .split_whitespace()
            .nth(16)
            .expect("nice field")
            .parse()
            .expect("a number")
    }

    #[test]
    fn the_read_side_runs_at_the_niceness_asked_for() {
        for nice in [0u8, 5, 10, 15, 19] {
            let seen = std::thread::spawn(move || {
                let before = own_nice();
                super::lower_priority(nice);
                (before, own_nice())
            })
            .join()
            .expect("thread");
            assert_eq!(seen, (0, i64::from(nice)), "asked for nice {nice}");
        }
    }
}
