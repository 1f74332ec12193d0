//! Messages that no event of the log causes directly (an endpoint disabled after a day of
//! failures; password resets and address checks when self-service lands): rendered, sealed
//! and written to the outbox like the reactor's, with an id the caller derives from what
//! caused them, so asking twice writes once.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tessera_commands::error::CommandError;
use tessera_commands::handler::{load, stream_of};
use tessera_domain::user::{Locale, UserAggregate, UserState};
use tessera_domain::values::UserId;
use tessera_log::pii::Vault;
use tessera_log::store::{EventStore, StoreError};
use uuid::Uuid;

use crate::message::{self, Envelope};
use crate::outbox::{self, NewMessage};
use crate::reactor::NotifyConfig;
use crate::templates::{self, Template};
use crate::webhooks::{Endpoint, OnDisabled};

/// Writes `template` to `user` (in their language) unless a message with `id` exists, or they
/// were erased, or it is optional and they opted out. Returns whether it was written.
#[allow(clippy::too_many_arguments)]
pub async fn tell_user(
    store: &dyn EventStore,
    pool: &PgPool,
    vault: &Vault,
    config: &NotifyConfig,
    user: UserId,
    template: Template,
    context: &(dyn Fn(Locale) -> Value + Send + Sync),
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, CommandError> {
    let UserState::Registered(to) =
        load::<UserAggregate>(store, stream_of::<UserAggregate>(user), Uuid::nil())
            .await?
            .state
    else {
        return Ok(false);
    };
    if to.erased || (template.marketing() && !to.preferences.marketing) {
        return Ok(false);
    }
    let locale = to.preferences.locale;
    let mut context = context(locale);
    if let Some(map) = context.as_object_mut() {
        map.entry("name").or_insert(to.display_name.clone().into());
        map.entry("unsubscribe").or_insert(Value::Null);
    }
    let words = templates::render(template, locale, &context)
        .map_err(|e| CommandError::Codec(e.to_string()))?;
    let bytes = message::build(
        &Envelope {
            id,
            from: &config.from,
            to_name: &to.display_name,
            to_address: to.email.as_str(),
            date: now,
            unsubscribe: None,
            calendar: None,
        },
        &words,
    )
    .map_err(|e| CommandError::Codec(e.to_string()))?;
    let seal = |purpose, plain| vault.seal_for(to.id.0, purpose, plain);
    let (Some(address), Some(message)) = (
        seal(outbox::ADDRESS, to.email.as_str().as_bytes()).await?,
        seal(outbox::MESSAGE, &bytes).await?,
    ) else {
        return Ok(false);
    };
    outbox::enqueue(
        pool,
        &NewMessage {
            id,
            template: template.name().into(),
            recipient: to.id.0,
            address,
            locale: locale.as_str().into(),
            marketing: template.marketing(),
            booking_id: None,
            subject: words.subject,
            message,
            event_position: 0,
            event_type: "direct".into(),
            created_at: now,
            deliver_at: now,
        },
    )
    .await
    .map_err(|e| CommandError::Store(StoreError::from(e)))
}

/// Tells an endpoint's owner that it was disabled.
#[derive(Debug)]
pub struct TellOwner {
    pub store: Arc<dyn EventStore>,
    pub pool: PgPool,
    pub vault: Arc<Vault>,
    pub config: NotifyConfig,
    pub clock: Arc<dyn tessera_log::clock::Clock>,
}

#[async_trait]
impl OnDisabled for TellOwner {
    async fn disabled(&self, endpoint: &Endpoint, reason: &str) {
        let since = endpoint
            .failing_since
            .map(|t| t.timestamp())
            .unwrap_or_default();
        let id = Uuid::new_v5(&endpoint.id, format!("webhook-disabled:{since}").as_bytes());
        let context = json!({
            "url": endpoint.url,
            "reason": reason,
            "endpoint_url": format!("{}/api/v1/webhooks/{}", self.config.base_url, endpoint.id),
        });
        let context = move |_| context.clone();
        if let Err(e) = tell_user(
            &*self.store,
            &self.pool,
            &self.vault,
            &self.config,
            UserId(endpoint.owner),
            Template::WebhookDisabled,
            &context,
            id,
            self.clock.now(),
        )
        .await
        {
            tracing::warn!(endpoint = %endpoint.id, error = %e, "the owner of a disabled endpoint was not told");
        }
    }
}

/// One slot of a provider's daily summary.
#[derive(Debug, Clone)]
pub struct SummarySlot {
    pub title: String,
    pub starts_at: DateTime<Utc>,
    pub capacity: i64,
    pub confirmed: i64,
    pub held: i64,
}

/// Tells `provider` what `day` holds for them (once per provider and day, whoever asks).
#[allow(clippy::too_many_arguments)]
pub async fn send_daily_summary(
    store: &dyn EventStore,
    pool: &PgPool,
    vault: &Vault,
    config: &NotifyConfig,
    provider: UserId,
    day: chrono::NaiveDate,
    slots: &[SummarySlot],
    now: DateTime<Utc>,
) -> Result<bool, CommandError> {
    if slots.is_empty() {
        return Ok(false);
    }
    let id = Uuid::new_v5(&provider.0, format!("daily-summary:{day}").as_bytes());
    let booked: i64 = slots.iter().map(|s| s.confirmed).sum();
    let base = config.base_url.clone();
    let context = move |locale: Locale| {
        json!({
            "day": day.to_string(),
            "booked": booked,
            "slots_url": format!("{base}/provider/slots"),
            "slots": slots.iter().map(|s| json!({
                "starts": crate::format::when(s.starts_at, locale),
                "listing": s.title,
                "confirmed": s.confirmed,
                "capacity": s.capacity,
                "held": s.held,
            })).collect::<Vec<_>>(),
        })
    };
    tell_user(
        store,
        pool,
        vault,
        config,
        provider,
        Template::ProviderDailySummary,
        &context,
        id,
        now,
    )
    .await
}

/// Writes `user` the link confirming their current address (message `id`: the same id writes
/// nothing twice). Accounts already confirmed, or erased, get nothing.
#[allow(clippy::too_many_arguments)]
pub async fn send_verification(
    store: &dyn EventStore,
    pool: &PgPool,
    vault: &Vault,
    config: &NotifyConfig,
    user: UserId,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, CommandError> {
    let UserState::Registered(u) =
        load::<UserAggregate>(store, stream_of::<UserAggregate>(user), Uuid::nil())
            .await?
            .state
    else {
        return Ok(false);
    };
    if u.email_verified || u.erased {
        return Ok(false);
    }
    let expires = now + crate::verify::TTL;
    let link = format!(
        "{}/verify-email?token={}",
        config.base_url,
        crate::verify::token(&config.unsubscribe_key, user, u.email.as_str(), expires)
    );
    let context = move |locale| {
        serde_json::json!({
            "link": link,
            "expires": crate::format::when(expires, locale),
        })
    };
    tell_user(
        store,
        pool,
        vault,
        config,
        user,
        Template::EmailVerification,
        &context,
        id,
        now,
    )
    .await
}
