//! Telling people what happened, on the log (ADR 0017, [notifications guide](../../docs/notifications.md)).
//!
//! The [`reactor::NotificationReactor`] follows the log like every reactor and derives messages
//! from events: booking held, hold about to lapse, confirmed (with a calendar entry), receipt,
//! reminder, cancelled, refunded, cancelled by the organiser, review invitation, points,
//! badges; for providers a new booking and a cancellation. Each message gets an id derived
//! from (event, template, recipient) and is written to the **outbox** ([`outbox`]) with
//! `ON CONFLICT DO NOTHING`, so a redelivered event, a replay from position 0 or a rebuild
//! writes nothing twice and therefore sends nothing twice.
//!
//! The [`delivery::Deliverer`] sends what is due through a [`delivery::Transport`] (SMTP with
//! lettre, or `.eml` files in a directory), retrying with exponential backoff and jitter and
//! dead-lettering a message after its last attempt or on a permanent refusal.
//!
//! Architecture invariant: this crate reads the log and writes only the outbox; it never
//! appends to the log (the unsubscribe link's effect is a user command, issued by the API).

pub mod delivery;
pub mod direct;
pub mod format;
pub mod message;
pub mod outbox;
pub mod reactor;
pub mod templates;
pub mod unsubscribe;
pub mod verify;
pub mod webhooks;

pub use delivery::{Deliverer, MailDir, RetryPolicy, Smtp, Transport};
pub use reactor::{NotificationReactor, NotifyConfig};
pub use templates::Template;
