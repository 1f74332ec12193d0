//! The payment gateway port and its adapters.
//!
//! - [`StripeGateway`]: the real `async-stripe` client (PaymentIntents and Refunds, each request
//!   with a Stripe idempotency key) and webhook verification (`Stripe-Signature` HMAC, 300 s
//!   tolerance). Tests aim it at a local fake speaking Stripe's API.
//! - [`SimulatedGateway`]: the default for local runs. Outcomes are deterministic by test card
//!   number (`4242 4242 4242 4242` succeeds, `4000 0000 0000 0002` is declined) and arrive
//!   asynchronously, as a webhook would, on [`SimulatedGateway::events`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use stripe::StripeRequest;
use tessera_domain::values::{BookingId, Money, PaymentId};
use tokio::sync::mpsc;
use uuid::Uuid;

/// A payment to collect.
#[derive(Debug, Clone)]
pub struct IntentRequest {
    pub payment_id: PaymentId,
    pub booking_id: BookingId,
    pub amount: Money,
    /// The simulated gateway's test card; Stripe collects the card in the browser instead.
    pub card: Option<String>,
    /// Sent as the provider's idempotency key: a retried command creates no second intent.
    pub idempotency_key: String,
}

/// A payment intent at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The provider's id (`pi_…`).
    pub provider_ref: String,
    /// What the browser needs to complete the payment (Stripe), if anything.
    pub client_secret: Option<String>,
}

/// A refund to send.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub provider_ref: String,
    pub refund_id: Uuid,
    pub amount: Money,
    pub idempotency_key: String,
}

/// What the provider tells us later (webhooks, or the simulated gateway's events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayEvent {
    PaymentSucceeded {
        event_id: String,
        provider_ref: String,
        payment_id: Option<PaymentId>,
    },
    PaymentFailed {
        event_id: String,
        provider_ref: String,
        payment_id: Option<PaymentId>,
        reason: String,
    },
    /// Any event type we do not act on.
    Ignored {
        event_id: String,
        event_type: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the payment provider refused the request: {0}")]
    Refused(String),
    #[error("the payment provider is unreachable or failed: {0}")]
    Unavailable(String),
    #[error("webhook signature is invalid: {0}")]
    BadSignature(String),
    #[error("webhook payload is invalid: {0}")]
    BadPayload(String),
}

/// The port the payment commands use.
#[async_trait]
pub trait PaymentGateway: Send + Sync + fmt::Debug {
    /// `stripe` or `simulated`; recorded on the payment.
    fn name(&self) -> &'static str;
    async fn create_intent(&self, request: &IntentRequest) -> Result<Intent, GatewayError>;
    /// Returns the provider's refund id.
    async fn refund(&self, request: &RefundRequest) -> Result<String, GatewayError>;
}

const METADATA_PAYMENT_ID: &str = "tessera_payment_id";
const METADATA_BOOKING_ID: &str = "tessera_booking_id";

/// Stripe, through the official-API `async-stripe` client.
#[derive(Clone)]
pub struct StripeGateway {
    client: stripe::Client,
    webhook_secret: String,
}

impl fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeGateway").finish_non_exhaustive()
    }
}

impl StripeGateway {
    /// `base_url` is Stripe's API root (`https://api.stripe.com/`; tests pass a local fake). It
    /// needs its trailing slash: the client appends `v1/…`.
    pub fn new(
        secret_key: &str,
        webhook_secret: &str,
        base_url: Option<&str>,
    ) -> Result<Self, GatewayError> {
        let mut builder = stripe::ClientBuilder::new(secret_key);
        if let Some(url) = base_url {
            let url = if url.ends_with('/') {
                url.to_owned()
            } else {
                format!("{url}/")
            };
            builder = builder.url(url);
        }
        let client = builder
            .build()
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            webhook_secret: webhook_secret.to_owned(),
        })
    }

    /// Verifies a webhook (`Stripe-Signature` header over the raw body) and maps it to a
    /// [`GatewayEvent`]. `now` is the current Unix time: signatures older than 300 s are refused,
    /// so a captured webhook cannot be replayed later.
    pub fn verify_webhook(
        &self,
        payload: &str,
        signature: &str,
        now: i64,
    ) -> Result<GatewayEvent, GatewayError> {
        use stripe_webhook::{EventObject, Webhook, WebhookError};
        let event =
            Webhook::construct_event_with_timestamp(payload, signature, &self.webhook_secret, now)
                .map_err(|e| match e {
                    WebhookError::BadParse(m) => GatewayError::BadPayload(m),
                    other => GatewayError::BadSignature(other.to_string()),
                })?;
        let event_id = event.id.as_str().to_owned();
        let payment_id = |meta: &HashMap<String, String>| {
            meta.get(METADATA_PAYMENT_ID)
                .and_then(|s| Uuid::parse_str(s).ok())
                .map(PaymentId)
        };
        Ok(match event.data.object {
            EventObject::PaymentIntentSucceeded(pi) => GatewayEvent::PaymentSucceeded {
                event_id,
                provider_ref: pi.id.as_str().to_owned(),
                payment_id: payment_id(&pi.metadata),
            },
            EventObject::PaymentIntentPaymentFailed(pi) => GatewayEvent::PaymentFailed {
                event_id,
                provider_ref: pi.id.as_str().to_owned(),
                payment_id: payment_id(&pi.metadata),
                reason: pi
                    .last_payment_error
                    .as_ref()
                    .and_then(|e| e.message.clone())
                    .unwrap_or_else(|| "payment failed".into()),
            },
            _ => GatewayEvent::Ignored {
                event_id,
                event_type: event.type_.to_string(),
            },
        })
    }
}

fn stripe_error(e: stripe::StripeError) -> GatewayError {
    match e {
        stripe::StripeError::Stripe(api, status) if status < 500 => {
            GatewayError::Refused(api.message.unwrap_or_else(|| format!("HTTP {status}")))
        }
        other => GatewayError::Unavailable(other.to_string()),
    }
}

fn idempotent(key: &str) -> Result<stripe::RequestStrategy, GatewayError> {
    stripe::IdempotencyKey::new(key)
        .map(stripe::RequestStrategy::Idempotent)
        .map_err(|e| GatewayError::Refused(format!("idempotency key: {e}")))
}

fn currency(money: &Money) -> Result<stripe_types::Currency, GatewayError> {
    money
        .currency
        .as_str()
        .to_lowercase()
        .parse()
        .map_err(|_| GatewayError::Refused(format!("currency {} is not supported", money.currency)))
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_intent(&self, request: &IntentRequest) -> Result<Intent, GatewayError> {
        use stripe_core::payment_intent::CreatePaymentIntent;
        let metadata = HashMap::from([
            (
                METADATA_PAYMENT_ID.to_owned(),
                request.payment_id.to_string(),
            ),
            (
                METADATA_BOOKING_ID.to_owned(),
                request.booking_id.to_string(),
            ),
        ]);
        let intent = CreatePaymentIntent::new(request.amount.minor, currency(&request.amount)?)
            .metadata(metadata)
            .customize()
            .request_strategy(idempotent(&request.idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        Ok(Intent {
            provider_ref: intent.id.as_str().to_owned(),
            client_secret: intent.client_secret,
        })
    }

    async fn refund(&self, request: &RefundRequest) -> Result<String, GatewayError> {
        use stripe_core::refund::CreateRefund;
        let refund = CreateRefund::new()
            .payment_intent(request.provider_ref.clone())
            .amount(request.amount.minor)
            .metadata(HashMap::from([(
                "tessera_refund_id".to_owned(),
                request.refund_id.to_string(),
            )]))
            .customize()
            .request_strategy(idempotent(&request.idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        Ok(refund.id.as_str().to_owned())
    }
}

/// The test card that succeeds.
pub const CARD_SUCCEEDS: &str = "4242424242424242";
/// The test card that is declined.
pub const CARD_DECLINED: &str = "4000000000000002";

/// A gateway that needs no network: deterministic outcomes by test card, delivered later as
/// events (like Stripe's webhooks). Repeating a request with the same idempotency key returns
/// the first intent and emits nothing new.
#[derive(Debug, Clone)]
pub struct SimulatedGateway {
    events: mpsc::UnboundedSender<GatewayEvent>,
    intents: Arc<Mutex<HashMap<String, Intent>>>,
}

impl SimulatedGateway {
    /// The gateway and the receiving end of its event feed.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<GatewayEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            Self {
                events,
                intents: Arc::default(),
            },
            rx,
        )
    }
}

#[async_trait]
impl PaymentGateway for SimulatedGateway {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn create_intent(&self, request: &IntentRequest) -> Result<Intent, GatewayError> {
        let card: String = request
            .card
            .as_deref()
            .unwrap_or(CARD_SUCCEEDS)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if card.len() < 12 || !card.chars().all(|c| c.is_ascii_digit()) {
            return Err(GatewayError::Refused("card number is not valid".into()));
        }
        let mut intents = self
            .intents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(intent) = intents.get(&request.idempotency_key) {
            return Ok(intent.clone());
        }
        let provider_ref = format!("sim_pi_{}", request.payment_id.0.simple());
        let intent = Intent {
            provider_ref: provider_ref.clone(),
            client_secret: None,
        };
        intents.insert(request.idempotency_key.clone(), intent.clone());
        let event_id = format!(
            "sim_evt_{}",
            Uuid::new_v5(&request.payment_id.0, b"outcome").simple()
        );
        let outcome = if card == CARD_DECLINED {
            GatewayEvent::PaymentFailed {
                event_id,
                provider_ref,
                payment_id: Some(request.payment_id),
                reason: "Your card was declined.".into(),
            }
        } else {
            GatewayEvent::PaymentSucceeded {
                event_id,
                provider_ref,
                payment_id: Some(request.payment_id),
            }
        };
        // Delivered after this call returns, like a webhook.
        let _ = self.events.send(outcome);
        Ok(intent)
    }

    async fn refund(&self, request: &RefundRequest) -> Result<String, GatewayError> {
        Ok(format!("sim_re_{}", request.refund_id.simple()))
    }
}
