//! The notification reactor: events in, messages out (into the outbox). It decides who is told
//! what from the log alone (the booking, listing and user streams), renders the message in the
//! recipient's language and writes it with an id derived from (event, template, recipient).
//!
//! - A redelivered event or a replay from position 0 derives the same ids: nothing new.
//! - An event older than `max_age` when the reactor reaches it sends nothing (a reactor
//!   deployed onto years of history, or rewound, does not write to people about the past).
//! - Optional messages go only to users who did not opt out, with a one-click unsubscribe link.
//! - An erased user gets nothing more, and their address and words leave the outbox.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tessera_commands::error::CommandError;
use tessera_commands::handler::{load, stream_of};
use tessera_commands::reactor::Reactor;
use tessera_domain::booking::{Booking, BookingAggregate, BookingEvent, Canceller};
use tessera_domain::listing::{Listing, ListingAggregate, ListingState};
use tessera_domain::loyalty::{AwardReason, Badge, LoyaltyEvent};
use tessera_domain::payment::PaymentEvent;
use tessera_domain::slot::{SlotAggregate, SlotState};
use tessera_domain::user::{Locale, User, UserAggregate, UserEvent, UserState};
use tessera_domain::values::{BookingId, Money, SlotId, UserId};
use tessera_log::codec::AnyEvent;
use tessera_log::pii::Vault;
use tessera_log::store::{EventStore, RecordedEvent, StoreError};
use uuid::Uuid;

use crate::format;
use crate::message::{self, Envelope};
use crate::outbox::{self, NewMessage};
use crate::templates::{self, Template};
use crate::unsubscribe;

/// What the reactor needs to know besides the log.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The platform's public address, for the links in messages.
    pub base_url: String,
    /// The sender, `Name <address>`.
    pub from: String,
    /// Signs the unsubscribe links.
    pub unsubscribe_key: Vec<u8>,
    /// Events older than this when first seen send nothing.
    pub max_age: TimeDelta,
    /// How long before a slot starts its reminder goes.
    pub reminder_before: TimeDelta,
    /// How long before a hold lapses its warning goes.
    pub hold_warning_before: TimeDelta,
}

impl NotifyConfig {
    pub fn new(base_url: &str, unsubscribe_key: Vec<u8>) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            from: "Tessera <no-reply@tessera.test>".into(),
            unsubscribe_key,
            max_age: TimeDelta::days(2),
            reminder_before: TimeDelta::hours(24),
            hold_warning_before: TimeDelta::minutes(5),
        }
    }
}

#[derive(Debug)]
pub struct NotificationReactor {
    store: Arc<dyn EventStore>,
    pool: PgPool,
    vault: Arc<Vault>,
    config: NotifyConfig,
}

fn store_error(e: sqlx::Error) -> CommandError {
    CommandError::Store(StoreError::from(e))
}

/// The reference a customer reads out at the door: the booking id's first 8 hex digits.
pub fn booking_ref(id: BookingId) -> String {
    id.0.simple().to_string()[..8].to_uppercase()
}

fn badge_name(badge: Badge, locale: Locale) -> &'static str {
    match (badge, locale) {
        (Badge::FirstTraveler, Locale::En) => "First traveller",
        (Badge::FirstTraveler, Locale::De) => "Erste Reise",
        (Badge::GlobeTrotter, Locale::En) => "Globetrotter",
        (Badge::GlobeTrotter, Locale::De) => "Weltenbummler",
        (Badge::SocialButterfly, Locale::En) => "Social butterfly",
        (Badge::SocialButterfly, Locale::De) => "Geselliger Gast",
        (Badge::BudgetMaster, Locale::En) => "Budget master",
        (Badge::BudgetMaster, Locale::De) => "Sparfuchs",
    }
}

fn award_reason(reason: &AwardReason, locale: Locale) -> &'static str {
    match (reason, locale) {
        (AwardReason::FirstBooking, Locale::En) => "for your first booking",
        (AwardReason::FirstBooking, Locale::De) => "für Ihre erste Buchung",
        (AwardReason::BookingCompleted, Locale::En) => "for a completed booking",
        (AwardReason::BookingCompleted, Locale::De) => "für eine abgeschlossene Buchung",
        (AwardReason::ReviewWritten, Locale::En) => "for your review",
        (AwardReason::ReviewWritten, Locale::De) => "für Ihre Bewertung",
        (AwardReason::Referral, Locale::En) => "for a friend you referred",
        (AwardReason::Referral, Locale::De) => "für eine Empfehlung",
    }
}

/// One message to derive.
struct Draft<'a> {
    template: Template,
    to: &'a User,
    booking: Option<BookingId>,
    context: Value,
    deliver_at: DateTime<Utc>,
    calendar: Option<(&'a str, String)>,
}

impl NotificationReactor {
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: PgPool,
        vault: Arc<Vault>,
        config: NotifyConfig,
    ) -> Self {
        Self {
            store,
            pool,
            vault,
            config,
        }
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, CommandError> {
        Ok(
            match load::<UserAggregate>(&*self.store, stream_of::<UserAggregate>(id), Uuid::nil())
                .await?
                .state
            {
                UserState::Registered(u) if !u.erased => Some(u),
                _ => None,
            },
        )
    }

    async fn booking(&self, id: BookingId) -> Result<Option<Booking>, CommandError> {
        Ok(
            load::<BookingAggregate>(&*self.store, stream_of::<BookingAggregate>(id), Uuid::nil())
                .await?
                .state
                .booking()
                .cloned(),
        )
    }

    async fn listing(&self, booking: &Booking) -> Result<Option<Listing>, CommandError> {
        Ok(
            match load::<ListingAggregate>(
                &*self.store,
                stream_of::<ListingAggregate>(booking.listing_id),
                Uuid::nil(),
            )
            .await?
            .state
            {
                ListingState::Published(l) => Some(l),
                ListingState::New => None,
            },
        )
    }

    /// When a slot starts (`None` if it is unknown).
    async fn slot_start(&self, id: SlotId) -> Result<Option<DateTime<Utc>>, CommandError> {
        Ok(
            match load::<SlotAggregate>(&*self.store, stream_of::<SlotAggregate>(id), Uuid::nil())
                .await?
                .state
            {
                SlotState::Scheduled(s) => Some(s.starts_at),
                SlotState::New => None,
            },
        )
    }

    fn money(&self, m: &Money, locale: Locale) -> String {
        format::money(m.minor, m.currency.as_str(), locale)
    }

    /// The variables every booking message has.
    fn booking_context(&self, b: &Booking, l: &Listing, to: &User) -> Value {
        let locale = to.preferences.locale;
        let base = &self.config.base_url;
        json!({
            "name": to.display_name,
            "booking_ref": booking_ref(b.id),
            "booking_url": format!("{base}/bookings/{}", b.id),
            "pay_url": format!("{base}/bookings/{}/pay", b.id),
            "receipt_url": format!("{base}/bookings/{}/receipt?format=pdf", b.id),
            "review_url": format!("{base}/bookings/{}/review", b.id),
            "listing_url": format!("{base}/listings/{}", b.listing_id),
            "manifest_url": format!("{base}/provider/slots/{}/manifest", b.slot_id),
            "listing": l.details.title,
            "place": format!("{}, {}", l.details.destination.name, l.details.destination.country),
            "starts": format::when(b.slot_starts_at, locale),
            "ends": format::when(b.slot_ends_at, locale),
            "hold_expires": format::when(b.hold_expires_at, locale),
            "seats": b.seats,
            "total": self.money(&b.total, locale),
            "paid": self.money(&b.paid, locale),
            "unsubscribe": Value::Null,
            "reason": Value::Null,
            "refund": Value::Null,
            "charged": Value::Null,
        })
    }

    /// Renders and writes one message (unless the recipient opted out of its kind).
    async fn write(&self, event: &RecordedEvent, d: Draft<'_>) -> Result<(), CommandError> {
        let marketing = d.template.marketing();
        if marketing && !d.to.preferences.marketing {
            return Ok(());
        }
        let id = message_id(event, d.template, d.to.id);
        let mut context = d.context;
        let unsubscribe = marketing.then(|| {
            format!(
                "{}/api/v1/unsubscribe/{}",
                self.config.base_url,
                unsubscribe::token(&self.config.unsubscribe_key, d.to.id)
            )
        });
        if let Some(map) = context.as_object_mut() {
            map.insert("unsubscribe".into(), unsubscribe.clone().into());
        }
        let locale = d.to.preferences.locale;
        let words = templates::render(d.template, locale, &context)
            .map_err(|e| CommandError::Codec(e.to_string()))?;
        let bytes = message::build(
            &Envelope {
                id,
                from: &self.config.from,
                to_name: &d.to.display_name,
                to_address: d.to.email.as_str(),
                date: event.recorded_at,
                unsubscribe: unsubscribe.as_deref(),
                calendar: d.calendar,
            },
            &words,
        )
        .map_err(|e| CommandError::Codec(e.to_string()))?;
        let seal = |purpose, plain| self.vault.seal_for(d.to.id.0, purpose, plain);
        let (Some(address), Some(message)) = (
            seal(outbox::ADDRESS, d.to.email.as_str().as_bytes()).await?,
            seal(outbox::MESSAGE, &bytes).await?,
        ) else {
            // Erased meanwhile: nothing is written to them any more.
            return Ok(());
        };
        outbox::enqueue(
            &self.pool,
            &NewMessage {
                id,
                template: d.template.name().into(),
                recipient: d.to.id.0,
                address,
                locale: locale.as_str().into(),
                marketing,
                booking_id: d.booking.map(|b| b.0),
                subject: words.subject,
                message,
                event_position: event.position.0 as i64,
                event_type: event.event_type.clone(),
                created_at: event.recorded_at,
                deliver_at: d.deliver_at,
            },
        )
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn discard(&self, booking: BookingId, templates: &[Template], why: &str) {
        let names: Vec<&str> = templates.iter().map(|t| t.name()).collect();
        if let Err(e) = outbox::discard_pending(&self.pool, booking.0, &names, why).await {
            tracing::warn!(error = %e, %booking, "pending messages not discarded");
        }
    }

    /// The messages of a booking event.
    async fn on_booking(
        &self,
        event: &RecordedEvent,
        e: &BookingEvent,
        now: DateTime<Utc>,
    ) -> Result<(), CommandError> {
        let id = booking_id_of(e);
        let Some(b) = self.booking(id).await? else {
            return Ok(());
        };
        let Some(l) = self.listing(&b).await? else {
            return Ok(());
        };
        let Some(customer) = self.user(b.customer_id).await? else {
            return Ok(());
        };
        let at = event.recorded_at;
        let ctx = self.booking_context(&b, &l, &customer);
        let draft = |template, context, deliver_at| Draft {
            template,
            to: &customer,
            booking: Some(id),
            context,
            deliver_at,
            calendar: None,
        };
        match e {
            BookingEvent::BookingPlaced {
                hold_expires_at, ..
            } => {
                self.write(event, draft(Template::BookingPlaced, ctx.clone(), at))
                    .await?;
                let warn_at = *hold_expires_at - self.config.hold_warning_before;
                if warn_at > at && *hold_expires_at > now {
                    self.write(event, draft(Template::HoldLapsing, ctx, warn_at))
                        .await?;
                }
            }
            BookingEvent::BookingConfirmed { .. } | BookingEvent::LatePaymentAccepted { .. } => {
                self.discard(id, &[Template::HoldLapsing], "booking paid")
                    .await;
                let description = format!(
                    "Booking {} · {} seat(s) · {}/bookings/{}",
                    booking_ref(id),
                    b.seats,
                    self.config.base_url,
                    id
                );
                let ics = message::calendar(
                    &format!("{id}@tessera"),
                    0,
                    &l.details.title,
                    &format!(
                        "{}, {}",
                        l.details.destination.name, l.details.destination.country
                    ),
                    &description,
                    b.slot_starts_at,
                    b.slot_ends_at,
                    at,
                );
                let mut confirmed = draft(Template::BookingConfirmed, ctx.clone(), at);
                confirmed.calendar = Some(("booking.ics", ics));
                self.write(event, confirmed).await?;
                let remind_at = b.slot_starts_at - self.config.reminder_before;
                if remind_at > at && remind_at > now - self.config.max_age {
                    self.write(event, draft(Template::Reminder, ctx.clone(), remind_at))
                        .await?;
                }
                if let Some(provider) = self.provider_of(&b, &l).await? {
                    let mut pctx = self.booking_context(&b, &l, &provider);
                    pctx["customer"] = customer.display_name.clone().into();
                    self.write(
                        event,
                        Draft {
                            template: Template::ProviderNewBooking,
                            to: &provider,
                            booking: Some(id),
                            context: pctx,
                            deliver_at: at,
                            calendar: None,
                        },
                    )
                    .await?;
                }
            }
            BookingEvent::BookingExpired { .. } => {
                self.discard(id, &[Template::HoldLapsing], "hold lapsed")
                    .await;
                self.write(event, draft(Template::BookingExpired, ctx, at))
                    .await?;
            }
            BookingEvent::BookingCancelled {
                by,
                reason,
                refund_due,
                ..
            } => {
                self.discard(
                    id,
                    &[Template::HoldLapsing, Template::Reminder],
                    "booking cancelled",
                )
                .await;
                let locale = customer.preferences.locale;
                let mut cctx = ctx.clone();
                cctx["refund"] = if refund_due.minor > 0 {
                    self.money(refund_due, locale).into()
                } else {
                    Value::Null
                };
                cctx["reason"] = reason.clone().into();
                let template = match by {
                    Canceller::Provider(_) => Template::CancelledByProvider,
                    _ => Template::BookingCancelled,
                };
                self.write(event, draft(template, cctx, at)).await?;
                // The provider hears of paid bookings someone else cancelled.
                if b.paid.minor > 0
                    && !matches!(by, Canceller::Provider(_))
                    && let Some(provider) = self.provider_of(&b, &l).await?
                {
                    let mut pctx = self.booking_context(&b, &l, &provider);
                    pctx["by"] = match (by, provider.preferences.locale) {
                        (Canceller::Admin(_), Locale::En) => "the platform",
                        (Canceller::Admin(_), Locale::De) => "die Plattform",
                        (_, Locale::En) => "the customer",
                        (_, Locale::De) => "den Kunden",
                    }
                    .into();
                    self.write(
                        event,
                        Draft {
                            template: Template::ProviderCancellation,
                            to: &provider,
                            booking: Some(id),
                            context: pctx,
                            deliver_at: at,
                            calendar: None,
                        },
                    )
                    .await?;
                }
            }
            BookingEvent::BookingRefunded {
                amount,
                total_refunded,
                ..
            } => {
                let locale = customer.preferences.locale;
                let mut rctx = ctx;
                rctx["amount"] = self.money(amount, locale).into();
                rctx["total_refunded"] = self.money(total_refunded, locale).into();
                self.write(event, draft(Template::BookingRefunded, rctx, at))
                    .await?;
            }
            BookingEvent::BookingCompleted { .. } => {
                self.write(event, draft(Template::ReviewInvitation, ctx, at))
                    .await?;
            }
            BookingEvent::BookingRescheduled {
                from_slot,
                slot_starts_at,
                slot_ends_at,
                refund,
                top_up,
                ..
            } => {
                // The reminder moves with the booking: the old one goes, unless this event
                // already wrote the new one (a redelivery).
                let remind_at = *slot_starts_at - self.config.reminder_before;
                let reminder = message_id(event, Template::Reminder, customer.id);
                if let Err(e) = outbox::discard_pending_but(
                    &self.pool,
                    id.0,
                    &[Template::Reminder.name()],
                    reminder,
                    "booking moved",
                )
                .await
                {
                    tracing::warn!(error = %e, booking = %id, "the old reminder was not discarded");
                }
                let locale = customer.preferences.locale;
                let mut mctx = ctx.clone();
                mctx["starts"] = format::when(*slot_starts_at, locale).into();
                mctx["ends"] = format::when(*slot_ends_at, locale).into();
                mctx["previous_starts"] = match self.slot_start(*from_slot).await? {
                    Some(start) => format::when(start, locale).into(),
                    None => Value::Null,
                };
                mctx["refund"] = if refund.minor > 0 {
                    self.money(refund, locale).into()
                } else {
                    Value::Null
                };
                mctx["charged"] = match top_up {
                    Some(t) => self.money(&t.amount, locale).into(),
                    None => Value::Null,
                };
                let description = format!(
                    "Booking {} · {} seat(s) · {}/bookings/{}",
                    booking_ref(id),
                    b.seats,
                    self.config.base_url,
                    id
                );
                // The same calendar UID as the confirmation's, with a higher SEQUENCE (the
                // move's version of the booking's stream): calendars move the event.
                let ics = message::calendar(
                    &format!("{id}@tessera"),
                    u32::try_from(event.stream_version).unwrap_or(u32::MAX),
                    &l.details.title,
                    &format!(
                        "{}, {}",
                        l.details.destination.name, l.details.destination.country
                    ),
                    &description,
                    *slot_starts_at,
                    *slot_ends_at,
                    at,
                );
                let mut moved = draft(Template::BookingRescheduled, mctx.clone(), at);
                moved.calendar = Some(("booking.ics", ics));
                self.write(event, moved).await?;
                if remind_at > at && remind_at > now - self.config.max_age {
                    self.write(event, draft(Template::Reminder, mctx, remind_at))
                        .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn provider_of(&self, b: &Booking, l: &Listing) -> Result<Option<User>, CommandError> {
        self.user(b.provider_id.unwrap_or(l.provider_id)).await
    }

    async fn on_receipt(
        &self,
        event: &RecordedEvent,
        e: &PaymentEvent,
    ) -> Result<(), CommandError> {
        let PaymentEvent::ReceiptIssued {
            booking_id,
            number,
            amount,
            tax,
            tax_rate_bp,
            ..
        } = e
        else {
            return Ok(());
        };
        let Some(b) = self.booking(*booking_id).await? else {
            return Ok(());
        };
        let (Some(l), Some(customer)) = (self.listing(&b).await?, self.user(b.customer_id).await?)
        else {
            return Ok(());
        };
        let locale = customer.preferences.locale;
        let mut ctx = self.booking_context(&b, &l, &customer);
        ctx["number"] = number.to_string().into();
        ctx["amount"] = self.money(amount, locale).into();
        ctx["tax"] = self.money(tax, locale).into();
        let rate = format!("{}.{:02} %", tax_rate_bp / 100, tax_rate_bp % 100);
        ctx["tax_rate"] = match locale {
            Locale::En => rate,
            Locale::De => rate.replace('.', ","),
        }
        .into();
        self.write(
            event,
            Draft {
                template: Template::Receipt,
                to: &customer,
                booking: Some(*booking_id),
                context: ctx,
                deliver_at: event.recorded_at,
                calendar: None,
            },
        )
        .await
    }

    async fn on_loyalty(
        &self,
        event: &RecordedEvent,
        e: &LoyaltyEvent,
    ) -> Result<(), CommandError> {
        let Some(user) = owner_of(event) else {
            return Ok(());
        };
        let Some(to) = self.user(user).await? else {
            return Ok(());
        };
        let locale = to.preferences.locale;
        let base = &self.config.base_url;
        let mut ctx = json!({
            "name": to.display_name,
            "points_url": format!("{base}/me/loyalty"),
            "unsubscribe": Value::Null,
        });
        let (template, booking) = match e {
            LoyaltyEvent::PointsAwarded {
                points,
                reason,
                booking_id,
                ..
            } if *points > 0 => {
                ctx["points"] = points.to_string().into();
                ctx["reason"] = award_reason(reason, locale).into();
                (Template::PointsEarned, *booking_id)
            }
            LoyaltyEvent::BadgeEarned { badge } => {
                ctx["badge"] = badge_name(*badge, locale).into();
                (Template::BadgeUnlocked, None)
            }
            _ => return Ok(()),
        };
        self.write(
            event,
            Draft {
                template,
                to: &to,
                booking,
                context: ctx,
                deliver_at: event.recorded_at,
                calendar: None,
            },
        )
        .await
    }
}

/// The id of the message `template` to `to` that `event` writes: the same on every delivery.
fn message_id(event: &RecordedEvent, template: Template, to: UserId) -> Uuid {
    Uuid::new_v5(
        &event.event_id,
        format!("notify:{}:{}", template.name(), to.0).as_bytes(),
    )
}

fn booking_id_of(e: &BookingEvent) -> BookingId {
    match e {
        BookingEvent::BookingPlaced { booking_id, .. }
        | BookingEvent::BookingPaymentStarted { booking_id, .. }
        | BookingEvent::BookingPaymentFailed { booking_id, .. }
        | BookingEvent::BookingConfirmed { booking_id, .. }
        | BookingEvent::BookingExpired { booking_id }
        | BookingEvent::BookingCancelled { booking_id, .. }
        | BookingEvent::BookingCompleted { booking_id }
        | BookingEvent::BookingRefunded { booking_id, .. }
        | BookingEvent::BookingReinstated { booking_id, .. }
        | BookingEvent::TicketCheckedIn { booking_id, .. }
        | BookingEvent::BookingNoShow { booking_id }
        | BookingEvent::BookingRescheduled { booking_id, .. }
        | BookingEvent::BookingMoveRequested { booking_id, .. }
        | BookingEvent::BookingMoveAbandoned { booking_id, .. }
        | BookingEvent::LatePaymentAccepted { booking_id, .. } => *booking_id,
    }
}

/// The user a per-user stream (`loyalty-<id>`) belongs to.
fn owner_of(event: &RecordedEvent) -> Option<UserId> {
    let (_, id) = event.stream_id.as_str().split_once('-')?;
    Uuid::try_parse(id).ok().map(UserId)
}

#[async_trait]
impl Reactor for NotificationReactor {
    fn name(&self) -> &'static str {
        "notifications"
    }

    async fn react(
        &self,
        event: &RecordedEvent,
        decoded: &AnyEvent,
        now: DateTime<Utc>,
    ) -> Result<(), CommandError> {
        if let AnyEvent::User(UserEvent::UserErased { user_id }) = decoded {
            outbox::erase_recipient(&self.pool, user_id.0)
                .await
                .map_err(store_error)?;
            return Ok(());
        }
        if event.recorded_at < now - self.config.max_age {
            return Ok(());
        }
        match decoded {
            // A customer who registered themselves, or anyone with a new address, confirms it.
            AnyEvent::User(
                UserEvent::UserRegistered {
                    user_id,
                    email_verified: false,
                    ..
                }
                | UserEvent::EmailChanged { user_id, .. },
            ) => {
                let id = message_id(event, Template::EmailVerification, *user_id);
                crate::direct::send_verification(
                    &*self.store,
                    &self.pool,
                    &self.vault,
                    &self.config,
                    *user_id,
                    id,
                    event.recorded_at,
                )
                .await?;
                Ok(())
            }
            AnyEvent::Booking(e) => self.on_booking(event, e, now).await,
            AnyEvent::Payment(e @ PaymentEvent::ReceiptIssued { .. }) => {
                self.on_receipt(event, e).await
            }
            AnyEvent::Loyalty(e) => self.on_loyalty(event, e).await,
            _ => Ok(()),
        }
    }
}
