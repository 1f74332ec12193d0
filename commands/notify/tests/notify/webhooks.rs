//! Webhooks against a local receiver that verifies signatures, answers errors on purpose and
//! goes away: order per endpoint, the same id on every retry, secrets rotated with an overlap,
//! an endpoint disabled after a day of failures (its owner told), and no request to an internal
//! address unless allowed.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};
use tessera_notify::direct::TellOwner;
use tessera_notify::webhooks::{
    self, UrlPolicy, WebhookDeliverer, WebhookPass, WebhookPolicy, verify,
};

use super::*;

#[derive(Debug, Clone)]
struct Received {
    id: String,
    body: serde_json::Value,
    /// Whether the signature verified under the receiver's secrets.
    verified: Vec<bool>,
}

#[derive(Default)]
struct Shared {
    secrets: Vec<String>,
    answers: VecDeque<u16>,
    received: Vec<Received>,
}

/// A local HTTP receiver on `127.0.0.1`; `stop` makes it go away.
struct Receiver {
    port: u16,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(port: u16, shared: Arc<Mutex<Shared>>) -> Self {
        let state = shared.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let (id, ts, sig) = (
                        h("webhook-id"),
                        h("webhook-timestamp"),
                        h("webhook-signature"),
                    );
                    let ts: i64 = ts.parse().unwrap_or_default();
                    let mut s = state.lock().expect("lock");
                    // The receiver checks the signature against the timestamp it was given; the
                    // platform's clock is a manual one, so the tolerance is wide here.
                    let verified = s
                        .secrets
                        .iter()
                        .map(|secret| verify(secret, &id, ts, &body, &sig, ts, 300))
                        .collect();
                    s.received.push(Received {
                        id,
                        body: serde_json::from_str(&body).unwrap_or_default(),
                        verified,
                    });
                    let status = s.answers.pop_front().unwrap_or(200);
                    (
                        StatusCode::from_u16(status).expect("status"),
                        "answer from the receiver",
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Self {
            port,
            shared,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.shared.lock().expect("lock").received.clone()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

const LOCAL: UrlPolicy = UrlPolicy {
    allow_http: true,
    allow_private: true,
};

fn deliverer(w: &World) -> WebhookDeliverer {
    WebhookDeliverer {
        pool: w.pool().clone(),
        client: webhooks::client(LOCAL).expect("client"),
        clock: w.clock.clone(),
        policy: WebhookPolicy::default(),
        on_disabled: Some(Arc::new(TellOwner {
            store: w.store.clone(),
            pool: w.pool().clone(),
            vault: w.vault.clone(),
            config: NotifyConfig::new("https://tessera.example", KEY.to_vec()),
            clock: w.clock.clone(),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_in_log_order_signed_with_the_same_id_on_every_retry() {
    let mut w = World::new().await;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let receiver = Receiver::start(0, shared.clone()).await;
    let types = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (mine, secret) = webhooks::create(
        w.pool(),
        &webhooks::Registration {
            owner: w.provider,
            all_events: false,
            url: &receiver.url(),
            event_types: &types(&["booking.placed", "booking.confirmed", "booking.cancelled"]),
            description: "the provider's booking system",
        },
        LOCAL,
        w.clock.now(),
    )
    .await
    .expect("endpoint");
    // Another provider's endpoint hears nothing of this provider's listings; an admin's all.
    let (theirs, _) = webhooks::create(
        w.pool(),
        &webhooks::Registration {
            owner: UserId(Uuid::new_v4()),
            all_events: false,
            url: &receiver.url(),
            event_types: &types(&["booking.placed"]),
            description: "",
        },
        LOCAL,
        w.clock.now(),
    )
    .await
    .expect("endpoint");
    let (admins, admin_secret) = webhooks::create(
        w.pool(),
        &webhooks::Registration {
            owner: UserId(Uuid::new_v4()),
            all_events: true,
            url: &receiver.url(),
            event_types: &types(&["booking.confirmed"]),
            description: "",
        },
        LOCAL,
        w.clock.now(),
    )
    .await
    .expect("endpoint");
    shared.lock().expect("lock").secrets = vec![secret.clone(), admin_secret.clone()];
    assert!(
        webhooks::create(
            w.pool(),
            &webhooks::Registration {
                owner: w.provider,
                all_events: false,
                url: &receiver.url(),
                event_types: &types(&["booking.teleported"]),
                description: "",
            },
            LOCAL,
            w.clock.now(),
        )
        .await
        .is_err()
    );

    let booking = w.place(2).await;
    w.pay(booking).await;
    let log = |id| {
        let pool = w.pool().clone();
        async move {
            webhooks::deliveries(&pool, id, 100)
                .await
                .expect("deliveries")
        }
    };
    assert_eq!(log(mine.id).await.len(), 2, "placed and confirmed");
    assert!(log(theirs.id).await.is_empty(), "not their listing");
    assert_eq!(log(admins.id).await.len(), 1);

    // The receiver fails the first request: the next of the endpoint waits behind it.
    shared.lock().expect("lock").answers = VecDeque::from([500]);
    let d = deliverer(&w);
    let pass = d.deliver_due().await.expect("deliver");
    assert_eq!(pass.failed, 1);
    let first_try = receiver.received();
    assert_eq!(first_try.len(), 1 + pass.delivered as usize);
    w.advance(TimeDelta::minutes(2));
    d.deliver_due().await.expect("deliver");
    let got = receiver.received();
    let for_me: Vec<&Received> = got.iter().filter(|r| r.verified[0]).collect();
    let types_in_order: Vec<&str> = for_me
        .iter()
        .map(|r| r.body["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types_in_order,
        ["booking.placed", "booking.placed", "booking.confirmed"],
        "the failed one again first, then the next, in log order"
    );
    assert_eq!(for_me[0].id, for_me[1].id, "the same id on the retry");
    assert!(for_me[0].id.starts_with("msg_"));
    assert_eq!(for_me[2].body["data"]["booking_id"], booking.0.to_string());
    assert_eq!(for_me[2].body["data"]["seats"], 2);
    assert_eq!(for_me[2].body["version"], 1);
    assert!(
        got.iter().any(|r| r.verified[1]),
        "the admin's endpoint, signed with its own secret"
    );
    let deliveries = log(mine.id).await;
    assert!(deliveries.iter().all(|d| d.status == "delivered"));
    let placed = deliveries
        .iter()
        .find(|d| d.event_type == "booking.placed")
        .expect("placed");
    let (_, attempts) = webhooks::delivery(w.pool(), mine.id, placed.id)
        .await
        .expect("delivery")
        .expect("found");
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(500), Some(200)]
    );
    assert_eq!(
        attempts[0].response.as_deref(),
        Some("answer from the receiver")
    );

    // A replay from position 0 derives the same deliveries: nothing new goes out.
    let before = receiver.received().len();
    w.replay_everything().await;
    assert_eq!(
        d.deliver_due().await.expect("deliver"),
        WebhookPass::default()
    );
    assert_eq!(receiver.received().len(), before);

    // Manual redelivery: the same id and body once more.
    assert!(
        webhooks::redeliver(w.pool(), mine.id, placed.id, w.clock.now())
            .await
            .expect("redeliver")
    );
    assert_eq!(d.deliver_due().await.expect("deliver").delivered, 1);
    assert_eq!(receiver.received().last().expect("last").id, for_me[0].id);

    // Rotation: both secrets sign during the overlap.
    let new_secret = webhooks::rotate(w.pool(), mine.id, w.clock.now(), TimeDelta::hours(24))
        .await
        .expect("rotate")
        .expect("endpoint");
    shared.lock().expect("lock").secrets = vec![secret, new_secret];
    assert!(
        webhooks::redeliver(w.pool(), mine.id, placed.id, w.clock.now())
            .await
            .expect("redeliver")
    );
    d.deliver_due().await.expect("deliver");
    let last = receiver.received().last().expect("last").clone();
    assert_eq!(
        last.verified,
        [true, true],
        "old and new secret both verify"
    );
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_a_day_is_disabled_its_owner_told_and_nothing_is_lost() {
    let mut w = World::new().await;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let receiver = Receiver::start(0, shared.clone()).await;
    let port = receiver.port;
    let url = receiver.url();
    receiver.stop().await; // gone
    let (endpoint, secret) = webhooks::create(
        w.pool(),
        &webhooks::Registration {
            owner: w.provider,
            all_events: false,
            url: &url,
            event_types: &["booking.placed".to_owned()],
            description: "",
        },
        LOCAL,
        w.clock.now(),
    )
    .await
    .expect("endpoint");
    shared.lock().expect("lock").secrets = vec![secret];
    w.place(1).await;
    w.place(1).await;
    let d = deliverer(&w);
    let mut passes = 0;
    while webhooks::get(w.pool(), endpoint.id)
        .await
        .expect("get")
        .expect("endpoint")
        .status
        == "enabled"
    {
        d.deliver_due().await.expect("deliver");
        w.advance(TimeDelta::hours(2) + TimeDelta::minutes(1));
        passes += 1;
        assert!(passes < 40, "disabled within about a day");
    }
    let disabled = webhooks::get(w.pool(), endpoint.id)
        .await
        .expect("get")
        .expect("endpoint");
    assert!(
        disabled
            .disabled_reason
            .as_deref()
            .unwrap_or("")
            .contains("failing since")
    );
    let told = w
        .messages()
        .await
        .into_iter()
        .find(|m| m.template == "webhook_disabled")
        .expect("the owner is told");
    assert_eq!(told.recipient, w.provider.0);
    assert!(told.subject.contains(&url));
    // Disabled: nothing is attempted, nothing is dropped.
    assert_eq!(
        d.deliver_due().await.expect("deliver"),
        WebhookPass::default()
    );

    // The receiver is back and the owner enables the endpoint: both events, in order.
    let receiver = Receiver::start(port, shared.clone()).await;
    assert!(
        webhooks::enable(w.pool(), endpoint.id, w.clock.now())
            .await
            .expect("enable")
    );
    assert_eq!(d.deliver_due().await.expect("deliver").delivered, 2);
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.verified == [true]));
    assert!(got[0].body["event_position"].as_u64() < got[1].body["event_position"].as_u64());
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_an_internal_address_unless_allowed() {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let receiver = Receiver::start(0, shared.clone()).await;
    let strict = UrlPolicy {
        allow_http: true,
        allow_private: false,
    };
    assert!(webhooks::check_url(&receiver.url(), strict).is_err());
    // A name that resolves to loopback (a DNS record could say the same of any name) is
    // refused when the connection resolves it, whatever the URL check said.
    let sneaky = format!("http://localhost:{}/hook", receiver.port);
    let client = webhooks::client(strict).expect("client");
    let err = client
        .post(&sneaky)
        .body("{}")
        .send()
        .await
        .expect_err("refused");
    assert!(
        format!("{err:?}").contains("resolves to no address"),
        "{err:?}"
    );
    assert!(receiver.received().is_empty());
    // Allowed explicitly: it goes through.
    let local = webhooks::client(LOCAL).expect("client");
    assert!(
        local
            .post(&sneaky)
            .body("{}")
            .send()
            .await
            .expect("sent")
            .status()
            .is_success()
    );
    receiver.stop().await;
}
