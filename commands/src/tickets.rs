//! Tickets and check-in at the door.
//!
//! A confirmed booking has one ticket per seat. A ticket is a token signed with the platform's
//! Ed25519 ticket key, so a scanner can tell a genuine ticket from a forged one offline, with
//! the public key alone (`GET /tickets/key`):
//!
//! ```text
//! TK1.<base64url(booking id, 16 bytes | slot id, 16 bytes | seat, u16 big-endian)>.<base64url(signature)>
//! ```
//!
//! The signature covers `tessera-ticket-v1` followed by the 34 payload bytes. Whether the
//! ticket still admits someone (booking confirmed, not yet checked in, right slot) is the
//! booking's to decide: checking a ticket in is `TicketCheckedIn` on the booking's stream,
//! appended at the version the decision was made on, so of two scanners checking in the same
//! ticket at once exactly one succeeds and the other is told when and by whom.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sqlx::PgPool;
use tessera_domain::booking::{Booking, BookingAggregate, BookingCommand, BookingStatus};
use tessera_domain::values::{BookingId, SlotId, UserId, derived_id};
use tessera_log::store::{EventStore, StoreError};
use uuid::Uuid;

use crate::catalog::{Acting, current_slot, may_act_on};
use crate::error::CommandError;
use crate::handler::{CommandContext, Executed, execute, load, stream_of};

const SECRET_NAME: &str = "ticket_ed25519_seed";
const PREFIX: &str = "TK1.";
const CONTEXT: &[u8] = b"tessera-ticket-v1";

/// The key tickets are signed with.
pub struct TicketKey {
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TicketKey(public {})",
            URL_SAFE_NO_PAD.encode(self.public)
        )
    }
}

/// What a ticket says: which seat of which booking on which slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub booking_id: BookingId,
    pub slot_id: SlotId,
    pub seat: u32,
}

impl Ticket {
    /// The ticket's stable id.
    pub fn id(&self) -> Uuid {
        derived_id(
            self.booking_id.0,
            format!("ticket:{}", self.seat).as_bytes(),
        )
    }

    fn payload(&self) -> [u8; 34] {
        let mut p = [0u8; 34];
        p[..16].copy_from_slice(self.booking_id.0.as_bytes());
        p[16..32].copy_from_slice(self.slot_id.0.as_bytes());
        p[32..].copy_from_slice(&(self.seat as u16).to_be_bytes());
        p
    }
}

/// Why a token is not a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a ticket this platform issued: {0}")]
pub struct Forged(pub &'static str);

impl TicketKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: &[u8]) -> Result<Self, StoreError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| StoreError::Backend(format!("ticket key: {e}")))?;
        let public = <[u8; 32]>::try_from(pair.public_key().as_ref())
            .map_err(|_| StoreError::Backend("ticket key: unexpected public key length".into()))?;
        Ok(Self { pair, public })
    }

    /// The database's ticket key, generated on first use (like the JWT secret).
    pub async fn load(pool: &PgPool) -> Result<Self, StoreError> {
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        sqlx::query(
            "INSERT INTO api_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(SECRET_NAME)
        .bind(fresh.as_slice())
        .execute(pool)
        .await?;
        let seed: Vec<u8> = sqlx::query_scalar("SELECT secret FROM api_secrets WHERE name = $1")
            .bind(SECRET_NAME)
            .fetch_one(pool)
            .await?;
        Self::from_seed(&seed)
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The signed token of a ticket.
    pub fn issue(&self, t: &Ticket) -> String {
        let payload = t.payload();
        let mut message = CONTEXT.to_vec();
        message.extend_from_slice(&payload);
        let signature = self.pair.sign(&message);
        format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

/// Reads a token and checks its signature against `public_key` (what a scanner does offline).
pub fn verify(public_key: &[u8; 32], token: &str) -> Result<Ticket, Forged> {
    let rest = token
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(Forged("a ticket starts with TK1."))?;
    let (payload, signature) = rest
        .split_once('.')
        .ok_or(Forged("a ticket has a payload and a signature"))?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| Forged("the payload is not base64url"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| Forged("the signature is not base64url"))?;
    let payload: [u8; 34] = payload
        .try_into()
        .map_err(|_| Forged("the payload has 34 bytes"))?;
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(&payload);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&message, &signature)
        .map_err(|_| Forged("the signature does not hold"))?;
    let uuid = |b: &[u8]| Uuid::from_slice(b).map_err(|_| Forged("malformed id"));
    Ok(Ticket {
        booking_id: BookingId(uuid(&payload[..16])?),
        slot_id: SlotId(uuid(&payload[16..32])?),
        seat: u32::from(u16::from_be_bytes([payload[32], payload[33]])),
    })
}

/// One ticket of a booking, with its token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub ticket: Ticket,
    pub token: String,
    /// When it was checked in, and by whom.
    pub checked_in: Option<tessera_domain::booking::CheckedIn>,
}

/// The tickets of a booking: one per seat, once it is confirmed (or completed); `None` before.
pub fn tickets_of(key: &TicketKey, b: &Booking) -> Option<Vec<Issued>> {
    if !matches!(
        b.status,
        BookingStatus::Confirmed | BookingStatus::Completed
    ) {
        return None;
    }
    Some(
        (1..=b.seats)
            .map(|seat| {
                let ticket = Ticket {
                    booking_id: b.id,
                    slot_id: b.slot_id,
                    seat,
                };
                Issued {
                    token: key.issue(&ticket),
                    ticket,
                    checked_in: b.checked_in.get(&seat).copied(),
                }
            })
            .collect(),
    )
}

/// Checks in the ticket `token` at the door of `slot` (its provider or an admin, `by`). The
/// token must be genuine; the booking decides the rest.
pub async fn check_in(
    store: &dyn EventStore,
    key: &TicketKey,
    acting: Acting,
    slot: SlotId,
    token: &str,
    by: UserId,
    ctx: &CommandContext,
) -> Result<(Ticket, Booking, Executed), CheckInError> {
    let door = current_slot(store, slot).await?;
    // Someone else's door is not found, as if it did not exist.
    if may_act_on(acting, door.provider_id, "slot").is_err() {
        return Err(CommandError::NotFound {
            what: "slot",
            id: slot.to_string(),
        }
        .into());
    }
    let ticket = verify(&key.public_key(), token).map_err(CheckInError::Forged)?;
    // A ticket names its slot: one issued before the booking moved opens no door.
    if ticket.slot_id != slot {
        return Err(
            CommandError::from(tessera_domain::booking::BookingError::WrongSlot {
                ticket: ticket.slot_id,
            })
            .into(),
        );
    }
    let stream = stream_of::<BookingAggregate>(ticket.booking_id);
    let executed = execute::<BookingAggregate>(
        store,
        stream.clone(),
        &BookingCommand::CheckIn {
            seat: ticket.seat,
            slot_id: slot,
            by,
            now: ctx.now,
        },
        ctx,
    )
    .await?;
    let booking = load::<BookingAggregate>(store, stream, Uuid::nil())
        .await?
        .state
        .booking()
        .cloned()
        .ok_or_else(|| CommandError::NotFound {
            what: "booking",
            id: ticket.booking_id.to_string(),
        })?;
    Ok((ticket, booking, executed))
}

/// Why a check-in failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckInError {
    #[error(transparent)]
    Forged(Forged),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// The people `provider` lets check tickets in at their doors.
pub async fn door_staff(
    store: &dyn EventStore,
    provider: UserId,
) -> Result<std::collections::BTreeSet<UserId>, CommandError> {
    use tessera_domain::provider::ProviderAggregate;
    let p = load::<ProviderAggregate>(store, stream_of::<ProviderAggregate>(provider), Uuid::nil())
        .await?;
    Ok(p.state
        .provider()
        .map(|p| p.door_staff.clone())
        .unwrap_or_default())
}

/// Lets `user` check tickets in at `provider`'s doors (or, with `add == false`, no longer).
/// Adding someone twice, or removing someone who is not staff, writes nothing.
pub async fn set_door_staff(
    store: &dyn EventStore,
    provider: UserId,
    user: UserId,
    add: bool,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    use tessera_domain::provider::{ProviderAggregate, ProviderCommand};
    if add {
        // Only someone with an account can be let in.
        crate::users::current_user(store, user).await?;
    }
    let command = if add {
        ProviderCommand::AddDoorStaff {
            provider_id: provider,
            user_id: user,
        }
    } else {
        ProviderCommand::RemoveDoorStaff {
            provider_id: provider,
            user_id: user,
        }
    };
    execute::<ProviderAggregate>(
        store,
        stream_of::<ProviderAggregate>(provider),
        &command,
        ctx,
    )
    .await
}

/// On whose behalf `caller` may check tickets in at `slot`'s door: admins on anyone's, the
/// slot's provider on their own, and the provider's door staff on the provider's. `None` when
/// the caller is none of these (a provider at another's door is told the slot is not found,
/// by [`check_in`]).
pub async fn door_keeper(
    store: &dyn EventStore,
    slot: SlotId,
    caller: UserId,
    admin: bool,
    provider: bool,
) -> Result<Option<Acting>, CommandError> {
    if admin {
        return Ok(Some(Acting::Admin));
    }
    let owner = match current_slot(store, slot).await {
        Ok(s) => s.provider_id,
        Err(CommandError::NotFound { .. }) => {
            return Ok(provider.then_some(Acting::Provider(caller)));
        }
        Err(e) => return Err(e),
    };
    if provider && owner == caller {
        return Ok(Some(Acting::Provider(caller)));
    }
    if door_staff(store, owner).await?.contains(&caller) {
        return Ok(Some(Acting::Provider(owner)));
    }
    Ok(provider.then_some(Acting::Provider(caller)))
}
