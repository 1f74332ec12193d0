//! Starting the platform's moving parts in one process: the API state (token keys, projection
//! positions, payment gateway), and optionally projectors, reactors and the deadline clock.
//! `tessera up` starts everything; `tessera serve` only what the API itself needs.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tessera_commands::clock::{Clock, SystemClock};
use tessera_commands::gateway::{PaymentGateway, SimulatedGateway, StripeGateway};
use tessera_commands::pii::{PiiStore, Vault};
use tessera_commands::reactor::{
    DeadlineReactor, LoyaltyReactor, PaymentsReactor, Reactor, ReactorRunner, fire_due_deadlines,
    handle_gateway_event,
};
use tessera_commands::store::EventStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::auth::TokenKeys;
use crate::http::positions::Positions;
use crate::http::{ApiConfig, AppState, StateParts};

/// Stripe credentials; without them payments go through the simulated gateway.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: String,
    pub webhook_secret: String,
    /// Stripe's API root; tests aim it at a local fake.
    pub api_base: Option<String>,
}

impl StripeConfig {
    /// `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET` and optional `STRIPE_API_BASE`.
    pub fn from_env() -> Option<Self> {
        let secret_key = std::env::var("STRIPE_SECRET_KEY").ok()?;
        Some(Self {
            secret_key,
            webhook_secret: std::env::var("STRIPE_WEBHOOK_SECRET").unwrap_or_default(),
            api_base: std::env::var("STRIPE_API_BASE").ok(),
        })
    }
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
}

/// The running parts; [`Platform::stop`] stops them all.
#[derive(Debug)]
pub struct Platform {
    pub state: AppState,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
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
        let vault = Vault::load(pool.clone(), crate::ops::master_key().as_deref())
            .await
            .context("cannot open the personal-data vault")?;
        let store: Arc<dyn EventStore> = Arc::new(PiiStore::new(store, vault.clone()));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);

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
                    // The simulated provider's outcomes arrive like webhooks, handled here.
                    let (store, clock, mut stopped) =
                        (store.clone(), clock.clone(), stopped.clone());
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
                            let (store, clock) = (store.clone(), clock.clone());
                            tokio::spawn(async move {
                                let mut attempts = 0;
                                while let Err(e) =
                                    handle_gateway_event(&*store, &event, clock.now()).await
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
        let seal_key = tessera_commands::audit::SealKey::load(&pool, options.seal_key.as_deref())
            .await
            .context("cannot load the seal key")?;
        let seal_public_key = seal_key.public_key();
        if let Some(every) = options.seal_every {
            tasks.push(tokio::spawn(tessera_commands::audit::run_sealer(
                pool.clone(),
                seal_key,
                every,
                stopped.clone(),
            )));
        }
        let (positions, follower) =
            Positions::start(pool.clone(), options.config.read_wait, stopped.clone()).await?;
        tasks.push(follower);

        if options.projectors {
            let projector = tessera_projections::Projector::new(
                pool.clone(),
                store.clone(),
                tessera_projections::all(&options.index_root),
                tessera_projections::ProjectorOptions {
                    label: options.projector_label.clone(),
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

        if options.reactors {
            let runner = ReactorRunner {
                store: store.clone(),
                pool: pool.clone(),
                clock: clock.clone(),
            };
            let reactors: Vec<Arc<dyn Reactor>> = vec![
                Arc::new(DeadlineReactor {
                    store: store.clone(),
                    pool: pool.clone(),
                }),
                Arc::new(PaymentsReactor {
                    store: store.clone(),
                    gateway: gateway.clone(),
                }),
                Arc::new(LoyaltyReactor {
                    store: store.clone(),
                }),
            ];
            for reactor in reactors {
                let (runner, stopped) = (runner.clone(), stopped.clone());
                tasks.push(tokio::spawn(
                    async move { runner.run(reactor, stopped).await },
                ));
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
                    if let Err(e) = fire_due_deadlines(&*store, &pool, clock.now()).await {
                        tracing::error!(error = %e, "firing deadlines failed");
                    }
                }
            }));
        }

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
            vault,
        });
        Ok(Self { state, stop, tasks })
    }

    /// Stops projectors, reactors and followers and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}
