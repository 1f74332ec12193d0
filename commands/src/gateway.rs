//! The payment gateway port and its adapters.
//!
//! - [`StripeGateway`]: the real `async-stripe` client (PaymentIntents and Refunds, each request
//!   with a Stripe idempotency key) and webhook verification (`Stripe-Signature` HMAC, 300 s
//!   tolerance). Tests aim it at a local fake speaking Stripe's API.
//!   Connect: an Express connected account per provider with an onboarding link, transfers of
//!   the provider's share (the charge as `source_transaction`, the booking as `transfer_group`)
//!   and their reversals; `account.updated` webhooks report the account's state.
//! - [`SimulatedGateway`]: the default for local runs. Outcomes are deterministic by test card
//!   number (`4242 4242 4242 4242` succeeds, `4000 0000 0000 0002` is declined) and arrive
//!   asynchronously, as a webhook would, on [`SimulatedGateway::events`]. Onboarding is instant.
//!   With a pool it keeps its book (charges, refunds, transfers, reversals) in
//!   `simulated_gateway_book`, which `ledger check` reconciles with.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sqlx::PgPool;
use stripe::StripeRequest;
use tessera_domain::values::{BookingId, Money, PaymentId, UserId};
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

/// A provider's connected account at the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedAccount {
    /// The gateway's id (`acct_…`).
    pub account_ref: String,
    /// Where the provider completes its onboarding (Stripe); none when it needs none.
    pub onboarding_url: Option<String>,
    /// Transfers can go to it already (the simulated gateway onboards instantly).
    pub active: bool,
}

/// A transfer of a provider's share to its connected account.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    /// The payment the money came from (`pi_…`): its charge is the transfer's source.
    pub payment_ref: String,
    pub destination: String,
    pub booking_id: BookingId,
    pub transfer_id: Uuid,
    pub amount: Money,
    pub idempotency_key: String,
}

/// Part of a transfer taken back.
#[derive(Debug, Clone)]
pub struct ReversalRequest {
    pub transfer_ref: String,
    pub reversal_id: Uuid,
    pub amount: Money,
    pub idempotency_key: String,
}

/// The gateway's own record of money it moved for the platform, for reconciliation: per object
/// id, its amount (refunds and reversals also name their parent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayBook {
    /// Succeeded payment intent → amount received.
    pub charges: BTreeMap<String, i64>,
    /// Refund → (its payment intent, amount).
    pub refunds: BTreeMap<String, (String, i64)>,
    /// Transfer → (destination account, amount, amount reversed).
    pub transfers: BTreeMap<String, (String, i64, i64)>,
    /// Payout of a connected account → (the account, amount, paid: `false` when it failed).
    pub payouts: BTreeMap<String, (String, i64, bool)>,
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
    /// A connected account changed: it can receive transfers (`active`) or not, and why.
    AccountUpdated {
        event_id: String,
        /// From the account's `tessera_provider_id` metadata.
        provider_id: Option<UserId>,
        account_ref: String,
        active: bool,
        reason: Option<String>,
    },
    /// A payout from a connected account to the provider's bank was paid, or failed
    /// (`payout.paid` / `payout.failed` of a connected account; the simulated weekly run).
    PayoutUpdated {
        event_id: String,
        /// Known to the simulated gateway; for Stripe, resolved from the account.
        provider_id: Option<UserId>,
        account_ref: String,
        payout_ref: String,
        amount: Money,
        /// `None` when paid; why, when failed.
        failure: Option<String>,
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
    /// Cancels an intent nobody should pay any more (a move that ended). `Refused` when the
    /// gateway has already decided it (its outcome then arrives as usual).
    async fn cancel_intent(&self, provider_ref: &str) -> Result<(), GatewayError>;
    /// Returns the provider's refund id.
    async fn refund(&self, request: &RefundRequest) -> Result<String, GatewayError>;
    /// Opens a provider's connected account (idempotently, by `idempotency_key`).
    async fn open_account(
        &self,
        provider_id: UserId,
        email: &str,
        idempotency_key: &str,
    ) -> Result<ConnectedAccount, GatewayError>;
    /// A fresh onboarding link for an account (links expire; a provider may need another).
    async fn onboarding_link(&self, account_ref: &str) -> Result<Option<String>, GatewayError>;
    /// Sends a transfer; returns the gateway's transfer id.
    async fn transfer(&self, request: &TransferRequest) -> Result<String, GatewayError>;
    /// Reverses part of a transfer; returns the gateway's reversal id.
    async fn reverse_transfer(&self, request: &ReversalRequest) -> Result<String, GatewayError>;
    /// The gateway's own record of what it moved.
    async fn book(&self) -> Result<GatewayBook, GatewayError>;
    /// Whether a connected account can receive transfers now, and if not why.
    async fn account_state(
        &self,
        account_ref: &str,
    ) -> Result<(bool, Option<String>), GatewayError>;
    /// The provider a connected account was opened for (from the account's metadata).
    async fn account_owner(&self, account_ref: &str) -> Result<Option<UserId>, GatewayError>;
}

const METADATA_PAYMENT_ID: &str = "tessera_payment_id";
const METADATA_BOOKING_ID: &str = "tessera_booking_id";

/// Stripe, through the official-API `async-stripe` client.
#[derive(Clone)]
pub struct StripeGateway {
    client: stripe::Client,
    /// The key and API root, for clients acting on a connected account (`Stripe-Account`).
    secret_key: String,
    base_url: Option<String>,
    webhook_secret: String,
    /// Where Stripe sends a provider back after (or to restart) its onboarding.
    return_url: String,
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
        let base_url = base_url.map(|url| {
            if url.ends_with('/') {
                url.to_owned()
            } else {
                format!("{url}/")
            }
        });
        let client = Self::client(secret_key, base_url.as_deref(), None)?;
        Ok(Self {
            client,
            secret_key: secret_key.to_owned(),
            base_url,
            webhook_secret: webhook_secret.to_owned(),
            return_url: "http://localhost:8080/providers/me/payout-account".into(),
        })
    }

    fn client(
        secret_key: &str,
        base_url: Option<&str>,
        account: Option<stripe_connect::AccountId>,
    ) -> Result<stripe::Client, GatewayError> {
        let mut builder = stripe::ClientBuilder::new(secret_key);
        if let Some(url) = base_url {
            builder = builder.url(url);
        }
        if let Some(account) = account {
            builder = builder.account_id(account);
        }
        builder
            .build()
            .map_err(|e| GatewayError::Unavailable(e.to_string()))
    }

    /// Where onboarding links send the provider back (the platform's public address).
    pub fn with_return_url(mut self, url: impl Into<String>) -> Self {
        self.return_url = url.into();
        self
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
            // Canceled (by us, for a move that ended, or in Stripe's dashboard): nobody can
            // pay it any more, which is a failure for the payment.
            EventObject::PaymentIntentCanceled(pi) => GatewayEvent::PaymentFailed {
                event_id,
                provider_ref: pi.id.as_str().to_owned(),
                payment_id: payment_id(&pi.metadata),
                reason: format!(
                    "canceled{}",
                    pi.cancellation_reason
                        .as_ref()
                        .map(|r| format!(": {}", r.as_str()))
                        .unwrap_or_default()
                ),
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
            EventObject::AccountUpdated(account) => {
                let active =
                    account.charges_enabled == Some(true) && account.payouts_enabled == Some(true);
                GatewayEvent::AccountUpdated {
                    event_id,
                    provider_id: account
                        .metadata
                        .as_ref()
                        .and_then(|m| m.get("tessera_provider_id"))
                        .and_then(|s| Uuid::parse_str(s).ok())
                        .map(UserId),
                    account_ref: account.id.as_str().to_owned(),
                    active,
                    reason: (!active).then(|| {
                        account
                            .requirements
                            .as_ref()
                            .and_then(|r| r.disabled_reason.as_ref())
                            .map_or_else(
                                || "onboarding is not complete".to_owned(),
                                |r| r.as_str().to_owned(),
                            )
                    }),
                }
            }
            EventObject::PayoutPaid(payout) | EventObject::PayoutFailed(payout)
                if event.account.is_some() =>
            {
                let failed = payout.status == "failed";
                GatewayEvent::PayoutUpdated {
                    event_id,
                    provider_id: None,
                    account_ref: event.account.clone().unwrap_or_default(),
                    payout_ref: payout.id.as_str().to_owned(),
                    amount: Money {
                        minor: payout.amount,
                        currency: tessera_domain::values::Currency::new(
                            &payout.currency.to_string().to_uppercase(),
                        )
                        .map_err(|e| GatewayError::BadPayload(e.to_string()))?,
                    },
                    failure: failed.then(|| {
                        payout
                            .failure_code
                            .clone()
                            .or_else(|| payout.failure_message.clone())
                            .unwrap_or_else(|| "the payout failed".into())
                    }),
                }
            }
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

    async fn cancel_intent(&self, provider_ref: &str) -> Result<(), GatewayError> {
        use stripe_core::payment_intent::{
            CancelPaymentIntent, CancelPaymentIntentCancellationReason,
        };
        CancelPaymentIntent::new(provider_ref)
            .cancellation_reason(CancelPaymentIntentCancellationReason::Abandoned)
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        Ok(())
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

    async fn open_account(
        &self,
        provider_id: UserId,
        email: &str,
        idempotency_key: &str,
    ) -> Result<ConnectedAccount, GatewayError> {
        use stripe_connect::account::{CreateAccount, CreateAccountType};
        let account = CreateAccount::new()
            .type_(CreateAccountType::Express)
            .email(email)
            .metadata(HashMap::from([(
                "tessera_provider_id".to_owned(),
                provider_id.to_string(),
            )]))
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        let account_ref = account.id.as_str().to_owned();
        let onboarding_url = self.onboarding_link(&account_ref).await?;
        Ok(ConnectedAccount {
            account_ref,
            onboarding_url,
            active: account.charges_enabled == Some(true) && account.payouts_enabled == Some(true),
        })
    }

    async fn account_state(
        &self,
        account_ref: &str,
    ) -> Result<(bool, Option<String>), GatewayError> {
        use stripe_connect::account::RetrieveAccount;
        let account = RetrieveAccount::new(account_ref)
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        let active = account.charges_enabled == Some(true) && account.payouts_enabled == Some(true);
        let reason = (!active).then(|| {
            account
                .requirements
                .as_ref()
                .and_then(|r| r.disabled_reason.as_ref())
                .map_or_else(
                    || "onboarding is not complete".to_owned(),
                    |r| r.as_str().to_owned(),
                )
        });
        Ok((active, reason))
    }

    async fn account_owner(&self, account_ref: &str) -> Result<Option<UserId>, GatewayError> {
        use stripe_connect::account::RetrieveAccount;
        let account = RetrieveAccount::new(account_ref)
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        Ok(account
            .metadata
            .as_ref()
            .and_then(|m| m.get("tessera_provider_id"))
            .and_then(|s| Uuid::parse_str(s).ok())
            .map(UserId))
    }

    async fn onboarding_link(&self, account_ref: &str) -> Result<Option<String>, GatewayError> {
        use stripe_connect::account_link::{CreateAccountLink, CreateAccountLinkType};
        let link = CreateAccountLink::new(account_ref, CreateAccountLinkType::AccountOnboarding)
            .refresh_url(format!("{}?refresh=1", self.return_url))
            .return_url(self.return_url.clone())
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        Ok(Some(link.url))
    }

    async fn transfer(&self, request: &TransferRequest) -> Result<String, GatewayError> {
        use stripe_connect::transfer::CreateTransfer;
        use stripe_core::payment_intent::RetrievePaymentIntent;
        // The transfer draws on the payment's charge, so it never outruns the money it shares.
        let intent = RetrievePaymentIntent::new(request.payment_ref.as_str())
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        let charge = intent
            .latest_charge
            .as_ref()
            .map(|c| c.id().as_str().to_owned())
            .ok_or_else(|| {
                GatewayError::Refused(format!("payment {} has no charge", request.payment_ref))
            })?;
        let transfer = CreateTransfer::new(currency(&request.amount)?, request.destination.clone())
            .amount(request.amount.minor)
            .source_transaction(charge)
            .transfer_group(request.booking_id.to_string())
            .metadata(HashMap::from([(
                "tessera_transfer_id".to_owned(),
                request.transfer_id.to_string(),
            )]))
            .customize()
            .request_strategy(idempotent(&request.idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        Ok(transfer.id.as_str().to_owned())
    }

    async fn reverse_transfer(&self, request: &ReversalRequest) -> Result<String, GatewayError> {
        use stripe_connect::transfer_reversal::CreateIdTransferReversal;
        let reversal = CreateIdTransferReversal::new(request.transfer_ref.as_str())
            .amount(request.amount.minor)
            .metadata(HashMap::from([(
                "tessera_reversal_id".to_owned(),
                request.reversal_id.to_string(),
            )]))
            .customize()
            .request_strategy(idempotent(&request.idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        Ok(reversal.id.as_str().to_owned())
    }

    async fn book(&self) -> Result<GatewayBook, GatewayError> {
        use futures::TryStreamExt;
        use stripe_connect::transfer::ListTransfer;
        use stripe_core::payment_intent::ListPaymentIntent;
        use stripe_core::refund::ListRefund;
        // Every page, through the client's own paginator (`has_more` / `starting_after`).
        let intents: Vec<_> = ListPaymentIntent::new()
            .limit(100)
            .paginate()
            .stream(&self.client)
            .try_collect()
            .await
            .map_err(stripe_error)?;
        let refunds: Vec<_> = ListRefund::new()
            .limit(100)
            .paginate()
            .stream(&self.client)
            .try_collect()
            .await
            .map_err(stripe_error)?;
        let transfers: Vec<_> = ListTransfer::new()
            .limit(100)
            .paginate()
            .stream(&self.client)
            .try_collect()
            .await
            .map_err(stripe_error)?;
        // Payouts are the connected accounts' own objects: listed per account.
        let accounts: Vec<_> = stripe_connect::account::ListAccount::new()
            .limit(100)
            .paginate()
            .stream(&self.client)
            .try_collect()
            .await
            .map_err(stripe_error)?;
        let mut book = GatewayBook::default();
        for account in &accounts {
            let payouts: Vec<_> = stripe_core::payout::ListPayout::new()
                .limit(100)
                .paginate()
                .stream(&Self::client(
                    &self.secret_key,
                    self.base_url.as_deref(),
                    Some(account.id.clone()),
                )?)
                .try_collect()
                .await
                .map_err(stripe_error)?;
            for p in payouts
                .iter()
                .filter(|p| p.status == "paid" || p.status == "failed")
            {
                book.payouts.insert(
                    p.id.as_str().to_owned(),
                    (account.id.as_str().to_owned(), p.amount, p.status == "paid"),
                );
            }
        }
        for pi in intents
            .iter()
            .filter(|pi| pi.status == stripe_core::PaymentIntentStatus::Succeeded)
        {
            book.charges
                .insert(pi.id.as_str().to_owned(), pi.amount_received);
        }
        for r in refunds
            .iter()
            .filter(|r| r.status.as_deref() == Some("succeeded"))
        {
            let intent = r
                .payment_intent
                .as_ref()
                .map(|p| p.id().as_str().to_owned())
                .unwrap_or_default();
            book.refunds
                .insert(r.id.as_str().to_owned(), (intent, r.amount));
        }
        for t in &transfers {
            let destination = t
                .destination
                .as_ref()
                .map(|d| d.id().as_str().to_owned())
                .unwrap_or_default();
            book.transfers.insert(
                t.id.as_str().to_owned(),
                (destination, t.amount, t.amount_reversed),
            );
        }
        Ok(book)
    }
}

/// The provider of a simulated account (`sim_acct_<provider id>`).
fn simulated_owner(account_ref: &str) -> Option<UserId> {
    account_ref
        .strip_prefix("sim_acct_")
        .and_then(|id| Uuid::parse_str(id).ok())
        .map(UserId)
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
    intents: Arc<Mutex<HashMap<String, (Intent, Money)>>>,
    /// Where the book is kept across processes; in memory without one.
    pool: Option<PgPool>,
    book: Arc<Mutex<Vec<BookRow>>>,
}

/// One object of the simulated gateway's book.
#[derive(Debug, Clone)]
struct BookRow {
    object_ref: String,
    kind: &'static str,
    parent_ref: Option<String>,
    destination: Option<String>,
    amount: Money,
}

impl SimulatedGateway {
    /// The gateway and the receiving end of its event feed.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<GatewayEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            Self {
                events,
                intents: Arc::default(),
                pool: None,
                book: Arc::default(),
            },
            rx,
        )
    }

    /// Keeps the book in `simulated_gateway_book`, so another process can reconcile with it.
    pub fn with_book(mut self, pool: PgPool) -> Self {
        self.pool = Some(pool);
        self
    }

    async fn record(&self, row: BookRow) -> Result<(), GatewayError> {
        match &self.pool {
            Some(pool) => {
                sqlx::query(
                    "INSERT INTO simulated_gateway_book (object_ref, kind, parent_ref, destination, amount, currency)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (object_ref) DO NOTHING",
                )
                .bind(&row.object_ref)
                .bind(row.kind)
                .bind(&row.parent_ref)
                .bind(&row.destination)
                .bind(row.amount.minor)
                .bind(row.amount.currency.as_str())
                .execute(pool)
                .await
                .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
            }
            None => {
                let mut book = self
                    .book
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !book.iter().any(|r| r.object_ref == row.object_ref) {
                    book.push(row);
                }
            }
        }
        Ok(())
    }

    /// The weekly payout run: pays out each connected account's balance (what was
    /// transferred to it, less reversals and earlier payouts) and reports every payout on the
    /// event feed. One payout per account and ISO week (`sim_po_<account>_<week>`): another
    /// run in the same week, from this process or another, pays nothing more (two racing runs
    /// write the same row once and report the same payout, which the provider records once).
    pub async fn run_payouts(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, GatewayError> {
        use chrono::Datelike;
        let week = now.iso_week();
        let mut balances: BTreeMap<String, (i64, Option<tessera_domain::values::Currency>)> =
            BTreeMap::new();
        let mut transfers: HashMap<String, String> = HashMap::new();
        let mut paid_out = std::collections::HashSet::new();
        for (object_ref, kind, parent, destination, amount, currency) in self.rows().await? {
            let currency = tessera_domain::values::Currency::new(&currency).ok();
            match kind.as_str() {
                "transfer" => {
                    let account = destination.unwrap_or_default();
                    transfers.insert(object_ref, account.clone());
                    let b = balances.entry(account).or_default();
                    b.0 += amount;
                    b.1 = b.1.or(currency);
                }
                "reversal" => {
                    if let Some(account) = parent.and_then(|t| transfers.get(&t)) {
                        balances.entry(account.clone()).or_default().0 -= amount;
                    }
                }
                "payout" => {
                    balances
                        .entry(destination.unwrap_or_default())
                        .or_default()
                        .0 -= amount;
                    paid_out.insert(object_ref);
                }
                _ => {}
            }
        }
        let mut paid = 0;
        for (account, (balance, currency)) in balances {
            let Some(currency) = currency.filter(|_| balance > 0) else {
                continue;
            };
            let payout_ref = format!("sim_po_{account}_{}w{:02}", week.year(), week.week());
            if paid_out.contains(&payout_ref) {
                continue;
            }
            let amount = Money {
                minor: balance,
                currency,
            };
            self.record(BookRow {
                object_ref: payout_ref.clone(),
                kind: "payout",
                parent_ref: None,
                destination: Some(account.clone()),
                amount,
            })
            .await?;
            let _ = self.events.send(GatewayEvent::PayoutUpdated {
                event_id: format!("sim_evt_{payout_ref}"),
                provider_id: simulated_owner(&account),
                account_ref: account,
                payout_ref,
                amount,
                failure: None,
            });
            paid += 1;
        }
        Ok(paid)
    }

    async fn rows(
        &self,
    ) -> Result<Vec<(String, String, Option<String>, Option<String>, i64, String)>, GatewayError>
    {
        match &self.pool {
            Some(pool) => sqlx::query_as(
                "SELECT object_ref, kind, parent_ref, destination, amount, currency FROM simulated_gateway_book ORDER BY created_at, object_ref",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string())),
            None => Ok(self
                .book
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|r| {
                    (
                        r.object_ref.clone(),
                        r.kind.to_owned(),
                        r.parent_ref.clone(),
                        r.destination.clone(),
                        r.amount.minor,
                        r.amount.currency.to_string(),
                    )
                })
                .collect()),
        }
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
        let provider_ref = format!("sim_pi_{}", request.payment_id.0.simple());
        let intent = Intent {
            provider_ref: provider_ref.clone(),
            client_secret: None,
        };
        {
            let mut intents = self
                .intents
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((intent, _)) = intents.get(&request.idempotency_key) {
                return Ok(intent.clone());
            }
            intents.insert(
                request.idempotency_key.clone(),
                (intent.clone(), request.amount),
            );
        }
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
            self.record(BookRow {
                object_ref: provider_ref.clone(),
                kind: "charge",
                parent_ref: None,
                destination: None,
                amount: request.amount,
            })
            .await?;
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

    async fn cancel_intent(&self, provider_ref: &str) -> Result<(), GatewayError> {
        Err(GatewayError::Refused(format!(
            "{provider_ref} was decided when it was created"
        )))
    }

    async fn refund(&self, request: &RefundRequest) -> Result<String, GatewayError> {
        let object_ref = format!("sim_re_{}", request.refund_id.simple());
        self.record(BookRow {
            object_ref: object_ref.clone(),
            kind: "refund",
            parent_ref: Some(request.provider_ref.clone()),
            destination: None,
            amount: request.amount,
        })
        .await?;
        Ok(object_ref)
    }

    async fn open_account(
        &self,
        provider_id: UserId,
        _email: &str,
        _idempotency_key: &str,
    ) -> Result<ConnectedAccount, GatewayError> {
        Ok(ConnectedAccount {
            account_ref: format!("sim_acct_{}", provider_id.0.simple()),
            onboarding_url: None,
            active: true,
        })
    }

    async fn onboarding_link(&self, _account_ref: &str) -> Result<Option<String>, GatewayError> {
        Ok(None)
    }

    async fn account_state(
        &self,
        _account_ref: &str,
    ) -> Result<(bool, Option<String>), GatewayError> {
        Ok((true, None))
    }

    async fn account_owner(&self, account_ref: &str) -> Result<Option<UserId>, GatewayError> {
        Ok(simulated_owner(account_ref))
    }

    async fn transfer(&self, request: &TransferRequest) -> Result<String, GatewayError> {
        let object_ref = format!("sim_tr_{}", request.transfer_id.simple());
        self.record(BookRow {
            object_ref: object_ref.clone(),
            kind: "transfer",
            parent_ref: Some(request.payment_ref.clone()),
            destination: Some(request.destination.clone()),
            amount: request.amount,
        })
        .await?;
        Ok(object_ref)
    }

    async fn reverse_transfer(&self, request: &ReversalRequest) -> Result<String, GatewayError> {
        let object_ref = format!("sim_trr_{}", request.reversal_id.simple());
        self.record(BookRow {
            object_ref: object_ref.clone(),
            kind: "reversal",
            parent_ref: Some(request.transfer_ref.clone()),
            destination: None,
            amount: request.amount,
        })
        .await?;
        Ok(object_ref)
    }

    async fn book(&self) -> Result<GatewayBook, GatewayError> {
        let mut book = GatewayBook::default();
        let mut reversals = Vec::new();
        for (object_ref, kind, parent, destination, amount, _) in self.rows().await? {
            match kind.as_str() {
                "charge" => {
                    book.charges.insert(object_ref, amount);
                }
                "refund" => {
                    book.refunds
                        .insert(object_ref, (parent.unwrap_or_default(), amount));
                }
                "transfer" => {
                    book.transfers
                        .insert(object_ref, (destination.unwrap_or_default(), amount, 0));
                }
                "payout" => {
                    book.payouts
                        .insert(object_ref, (destination.unwrap_or_default(), amount, true));
                }
                _ => reversals.push((parent.unwrap_or_default(), amount)),
            }
        }
        for (transfer, amount) in reversals {
            if let Some(t) = book.transfers.get_mut(&transfer) {
                t.2 += amount;
            }
        }
        Ok(book)
    }
}
