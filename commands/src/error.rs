//! The closed set of errors a command can end with. The HTTP layer maps each variant to one
//! problem type and status; nothing else leaks out of the write side.

use tessera_domain::booking::BookingError;
use tessera_domain::listing::ListingError;
use tessera_domain::loyalty::LoyaltyError;
use tessera_domain::payment::PaymentError;
use tessera_domain::provider::ProviderError;
use tessera_domain::review::ReviewError;
use tessera_domain::schedule::ScheduleError;
use tessera_domain::slot::SlotError;
use tessera_domain::user::UserError;

use tessera_log::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Booking(#[from] BookingError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Listing(#[from] ListingError),
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error(transparent)]
    Loyalty(#[from] LoyaltyError),
    #[error(transparent)]
    Review(#[from] ReviewError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("this {what} belongs to someone else")]
    NotYours { what: &'static str },
    #[error("a reason is required for this command")]
    ReasonRequired,
    #[error("the payment was refused: {0}")]
    PaymentRefused(String),
    #[error("the payment provider is unavailable (safe to retry): {0}")]
    GatewayUnavailable(String),
    #[error("this idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("too many concurrent changes; gave up after {attempts} attempts (safe to retry)")]
    Contention { attempts: u32 },
    /// Too many requests are already waiting for the same aggregate (a rush on one slot);
    /// nothing was done.
    #[error("busy: {0}; nothing was done (safe to retry)")]
    Busy(String),
    #[error("stored event cannot be read: {0}")]
    Codec(String),
    /// A stored idempotent answer cannot be read, or an answer cannot be stored.
    #[error("idempotency record: {0}")]
    Idempotency(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommandError {
    /// A business refusal (the request was understood and the rules said no), as opposed to an
    /// infrastructure failure. Refusals are final results, remembered by idempotency keys.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Booking(_)
                | Self::Slot(_)
                | Self::Listing(_)
                | Self::Payment(_)
                | Self::Loyalty(_)
                | Self::Review(_)
                | Self::User(_)
                | Self::Provider(_)
                | Self::Schedule(_)
                | Self::PaymentRefused(_)
                | Self::ReasonRequired
                | Self::NotFound { .. }
                | Self::NotYours { .. }
        )
    }
}
