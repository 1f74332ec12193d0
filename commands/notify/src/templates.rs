//! The messages' words: one template file per message, language and part
//! (`templates/<lang>/<message>.txt` with a `subject` and a `body` block, and
//! `templates/<lang>/<message>.html` on the language's layout), rendered with minijinja. HTML
//! is escaped by the file name; plain text is not. Values arrive formatted (amounts and
//! times in the reader's language, see [`crate::format`]).

use std::sync::OnceLock;

use minijinja::Environment;
use minijinja::value::Serde;
use serde::Serialize;
use tessera_domain::user::Locale;

/// Every message the platform sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    BookingPlaced,
    HoldLapsing,
    BookingExpired,
    BookingConfirmed,
    Reminder,
    Receipt,
    BookingCancelled,
    BookingRescheduled,
    CancelledByProvider,
    BookingRefunded,
    ReviewInvitation,
    PointsEarned,
    BadgeUnlocked,
    ProviderNewBooking,
    ProviderCancellation,
    ProviderDailySummary,
    PasswordReset,
    EmailVerification,
    WebhookDisabled,
}

impl Template {
    pub const ALL: [Template; 19] = [
        Self::BookingPlaced,
        Self::HoldLapsing,
        Self::BookingExpired,
        Self::BookingConfirmed,
        Self::Reminder,
        Self::Receipt,
        Self::BookingCancelled,
        Self::BookingRescheduled,
        Self::CancelledByProvider,
        Self::BookingRefunded,
        Self::ReviewInvitation,
        Self::PointsEarned,
        Self::BadgeUnlocked,
        Self::ProviderNewBooking,
        Self::ProviderCancellation,
        Self::ProviderDailySummary,
        Self::PasswordReset,
        Self::EmailVerification,
        Self::WebhookDisabled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::BookingPlaced => "booking_placed",
            Self::HoldLapsing => "hold_lapsing",
            Self::BookingExpired => "booking_expired",
            Self::BookingConfirmed => "booking_confirmed",
            Self::Reminder => "reminder",
            Self::Receipt => "receipt",
            Self::BookingCancelled => "booking_cancelled",
            Self::BookingRescheduled => "booking_rescheduled",
            Self::CancelledByProvider => "cancelled_by_provider",
            Self::BookingRefunded => "booking_refunded",
            Self::ReviewInvitation => "review_invitation",
            Self::PointsEarned => "points_earned",
            Self::BadgeUnlocked => "badge_unlocked",
            Self::ProviderNewBooking => "provider_new_booking",
            Self::ProviderCancellation => "provider_cancellation",
            Self::ProviderDailySummary => "provider_daily_summary",
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
            Self::WebhookDisabled => "webhook_disabled",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Optional messages follow the recipient's opt-out and carry a one-click unsubscribe
    /// link; every other message is transactional and always goes.
    pub fn marketing(self) -> bool {
        matches!(
            self,
            Self::ReviewInvitation | Self::PointsEarned | Self::BadgeUnlocked
        )
    }
}

/// A message's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
#[error("template {template}: {source}")]
pub struct RenderError {
    template: String,
    #[source]
    source: minijinja::Error,
}

const FILES: &[(&str, &str)] = &[
    (
        "en/badge_unlocked.html",
        include_str!("../templates/en/badge_unlocked.html"),
    ),
    (
        "en/badge_unlocked.txt",
        include_str!("../templates/en/badge_unlocked.txt"),
    ),
    (
        "en/booking_cancelled.html",
        include_str!("../templates/en/booking_cancelled.html"),
    ),
    (
        "en/booking_cancelled.txt",
        include_str!("../templates/en/booking_cancelled.txt"),
    ),
    (
        "en/booking_rescheduled.html",
        include_str!("../templates/en/booking_rescheduled.html"),
    ),
    (
        "en/booking_rescheduled.txt",
        include_str!("../templates/en/booking_rescheduled.txt"),
    ),
    (
        "en/booking_confirmed.html",
        include_str!("../templates/en/booking_confirmed.html"),
    ),
    (
        "en/booking_confirmed.txt",
        include_str!("../templates/en/booking_confirmed.txt"),
    ),
    (
        "en/booking_expired.html",
        include_str!("../templates/en/booking_expired.html"),
    ),
    (
        "en/booking_expired.txt",
        include_str!("../templates/en/booking_expired.txt"),
    ),
    (
        "en/booking_placed.html",
        include_str!("../templates/en/booking_placed.html"),
    ),
    (
        "en/booking_placed.txt",
        include_str!("../templates/en/booking_placed.txt"),
    ),
    (
        "en/booking_refunded.html",
        include_str!("../templates/en/booking_refunded.html"),
    ),
    (
        "en/booking_refunded.txt",
        include_str!("../templates/en/booking_refunded.txt"),
    ),
    (
        "en/cancelled_by_provider.html",
        include_str!("../templates/en/cancelled_by_provider.html"),
    ),
    (
        "en/cancelled_by_provider.txt",
        include_str!("../templates/en/cancelled_by_provider.txt"),
    ),
    (
        "en/email_verification.html",
        include_str!("../templates/en/email_verification.html"),
    ),
    (
        "en/email_verification.txt",
        include_str!("../templates/en/email_verification.txt"),
    ),
    ("en/footer.txt", include_str!("../templates/en/footer.txt")),
    (
        "en/hold_lapsing.html",
        include_str!("../templates/en/hold_lapsing.html"),
    ),
    (
        "en/hold_lapsing.txt",
        include_str!("../templates/en/hold_lapsing.txt"),
    ),
    (
        "en/layout.html",
        include_str!("../templates/en/layout.html"),
    ),
    (
        "en/password_reset.html",
        include_str!("../templates/en/password_reset.html"),
    ),
    (
        "en/password_reset.txt",
        include_str!("../templates/en/password_reset.txt"),
    ),
    (
        "en/points_earned.html",
        include_str!("../templates/en/points_earned.html"),
    ),
    (
        "en/points_earned.txt",
        include_str!("../templates/en/points_earned.txt"),
    ),
    (
        "en/provider_cancellation.html",
        include_str!("../templates/en/provider_cancellation.html"),
    ),
    (
        "en/provider_cancellation.txt",
        include_str!("../templates/en/provider_cancellation.txt"),
    ),
    (
        "en/provider_new_booking.html",
        include_str!("../templates/en/provider_new_booking.html"),
    ),
    (
        "en/provider_new_booking.txt",
        include_str!("../templates/en/provider_new_booking.txt"),
    ),
    (
        "en/receipt.html",
        include_str!("../templates/en/receipt.html"),
    ),
    (
        "en/receipt.txt",
        include_str!("../templates/en/receipt.txt"),
    ),
    (
        "en/reminder.html",
        include_str!("../templates/en/reminder.html"),
    ),
    (
        "en/reminder.txt",
        include_str!("../templates/en/reminder.txt"),
    ),
    (
        "en/review_invitation.html",
        include_str!("../templates/en/review_invitation.html"),
    ),
    (
        "en/review_invitation.txt",
        include_str!("../templates/en/review_invitation.txt"),
    ),
    (
        "en/provider_daily_summary.html",
        include_str!("../templates/en/provider_daily_summary.html"),
    ),
    (
        "en/provider_daily_summary.txt",
        include_str!("../templates/en/provider_daily_summary.txt"),
    ),
    (
        "en/webhook_disabled.html",
        include_str!("../templates/en/webhook_disabled.html"),
    ),
    (
        "en/webhook_disabled.txt",
        include_str!("../templates/en/webhook_disabled.txt"),
    ),
    (
        "de/badge_unlocked.html",
        include_str!("../templates/de/badge_unlocked.html"),
    ),
    (
        "de/badge_unlocked.txt",
        include_str!("../templates/de/badge_unlocked.txt"),
    ),
    (
        "de/booking_cancelled.html",
        include_str!("../templates/de/booking_cancelled.html"),
    ),
    (
        "de/booking_cancelled.txt",
        include_str!("../templates/de/booking_cancelled.txt"),
    ),
    (
        "de/booking_rescheduled.html",
        include_str!("../templates/de/booking_rescheduled.html"),
    ),
    (
        "de/booking_rescheduled.txt",
        include_str!("../templates/de/booking_rescheduled.txt"),
    ),
    (
        "de/booking_confirmed.html",
        include_str!("../templates/de/booking_confirmed.html"),
    ),
    (
        "de/booking_confirmed.txt",
        include_str!("../templates/de/booking_confirmed.txt"),
    ),
    (
        "de/booking_expired.html",
        include_str!("../templates/de/booking_expired.html"),
    ),
    (
        "de/booking_expired.txt",
        include_str!("../templates/de/booking_expired.txt"),
    ),
    (
        "de/booking_placed.html",
        include_str!("../templates/de/booking_placed.html"),
    ),
    (
        "de/booking_placed.txt",
        include_str!("../templates/de/booking_placed.txt"),
    ),
    (
        "de/booking_refunded.html",
        include_str!("../templates/de/booking_refunded.html"),
    ),
    (
        "de/booking_refunded.txt",
        include_str!("../templates/de/booking_refunded.txt"),
    ),
    (
        "de/cancelled_by_provider.html",
        include_str!("../templates/de/cancelled_by_provider.html"),
    ),
    (
        "de/cancelled_by_provider.txt",
        include_str!("../templates/de/cancelled_by_provider.txt"),
    ),
    (
        "de/email_verification.html",
        include_str!("../templates/de/email_verification.html"),
    ),
    (
        "de/email_verification.txt",
        include_str!("../templates/de/email_verification.txt"),
    ),
    ("de/footer.txt", include_str!("../templates/de/footer.txt")),
    (
        "de/hold_lapsing.html",
        include_str!("../templates/de/hold_lapsing.html"),
    ),
    (
        "de/hold_lapsing.txt",
        include_str!("../templates/de/hold_lapsing.txt"),
    ),
    (
        "de/layout.html",
        include_str!("../templates/de/layout.html"),
    ),
    (
        "de/password_reset.html",
        include_str!("../templates/de/password_reset.html"),
    ),
    (
        "de/password_reset.txt",
        include_str!("../templates/de/password_reset.txt"),
    ),
    (
        "de/points_earned.html",
        include_str!("../templates/de/points_earned.html"),
    ),
    (
        "de/points_earned.txt",
        include_str!("../templates/de/points_earned.txt"),
    ),
    (
        "de/provider_cancellation.html",
        include_str!("../templates/de/provider_cancellation.html"),
    ),
    (
        "de/provider_cancellation.txt",
        include_str!("../templates/de/provider_cancellation.txt"),
    ),
    (
        "de/provider_new_booking.html",
        include_str!("../templates/de/provider_new_booking.html"),
    ),
    (
        "de/provider_new_booking.txt",
        include_str!("../templates/de/provider_new_booking.txt"),
    ),
    (
        "de/receipt.html",
        include_str!("../templates/de/receipt.html"),
    ),
    (
        "de/receipt.txt",
        include_str!("../templates/de/receipt.txt"),
    ),
    (
        "de/reminder.html",
        include_str!("../templates/de/reminder.html"),
    ),
    (
        "de/reminder.txt",
        include_str!("../templates/de/reminder.txt"),
    ),
    (
        "de/review_invitation.html",
        include_str!("../templates/de/review_invitation.html"),
    ),
    (
        "de/review_invitation.txt",
        include_str!("../templates/de/review_invitation.txt"),
    ),
    (
        "de/provider_daily_summary.html",
        include_str!("../templates/de/provider_daily_summary.html"),
    ),
    (
        "de/provider_daily_summary.txt",
        include_str!("../templates/de/provider_daily_summary.txt"),
    ),
    (
        "de/webhook_disabled.html",
        include_str!("../templates/de/webhook_disabled.html"),
    ),
    (
        "de/webhook_disabled.txt",
        include_str!("../templates/de/webhook_disabled.txt"),
    ),
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in FILES {
            // The files are part of the binary and checked by the tests below.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "a message template does not parse");
            }
        }
        env
    })
}

/// Renders `template` in `locale` with `context` (every variable the template names must be
/// there: a missing one is an error, not an empty string).
pub fn render(
    template: Template,
    locale: Locale,
    context: &serde_json::Value,
) -> Result<Rendered, RenderError> {
    let env = environment();
    let err = |source| RenderError {
        template: format!("{}/{}", locale.as_str(), template.name()),
        source,
    };
    let text = env
        .get_template(&format!("{}/{}.txt", locale.as_str(), template.name()))
        .map_err(err)?;
    let mut captured = text.render_captured(Serde(context.clone())).map_err(err)?;
    let subject = captured
        .with_state_mut(|state| state.render_block("subject"))
        .map_err(err)?
        .trim()
        .to_owned();
    let body = captured
        .with_state_mut(|state| state.render_block("body"))
        .map_err(err)?;
    let mut html_context = context.clone();
    if let Some(map) = html_context.as_object_mut() {
        map.insert("subject".into(), subject.clone().into());
    }
    let html = env
        .get_template(&format!("{}/{}.html", locale.as_str(), template.name()))
        .map_err(err)?
        .render(Serde(html_context))
        .map_err(err)?;
    Ok(Rendered {
        subject,
        text: body.trim_start().to_owned(),
        html,
    })
}
