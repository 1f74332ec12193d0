//! Loyalty accounts (one per user): points awarded for what customers do, reversed when the
//! booking that earned them is refunded, redeemed against bookings; badges for milestones.
//!
//! Rules (from the product seeds): first booking 500 points, completed booking 100, review 50,
//! referral 200. Badges: First Traveler (first booking), Globe Trotter (10 completed bookings),
//! Social Butterfly (5 reviews), Budget Master (saved at least €500 through points).
//! Invariant: balance = awarded − reversed − redeemed ± adjustments, and it is never negative.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{BookingId, Currency, Money, UserId};

pub const FIRST_BOOKING_POINTS: i64 = 500;
pub const BOOKING_COMPLETED_POINTS: i64 = 100;
pub const REVIEW_POINTS: i64 = 50;
pub const REFERRAL_POINTS: i64 = 200;
const GLOBE_TROTTER_BOOKINGS: u32 = 10;
const SOCIAL_BUTTERFLY_REVIEWS: u32 = 5;
/// €500, in cents.
const BUDGET_MASTER_SAVINGS_EUR_MINOR: i64 = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwardReason {
    FirstBooking,
    BookingCompleted,
    ReviewWritten,
    Referral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Badge {
    FirstTraveler,
    GlobeTrotter,
    SocialButterfly,
    BudgetMaster,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoyaltyAccount {
    pub balance: i64,
    pub awarded: i64,
    pub reversed: i64,
    pub redeemed: i64,
    pub adjusted: i64,
    /// Points awarded per (source, reason), net of reversals: what a refund takes back.
    pub by_booking: BTreeMap<BookingId, i64>,
    pub awards: BTreeSet<(String, AwardReason)>,
    pub badges: BTreeSet<Badge>,
    pub completed: u32,
    pub reviews: u32,
    pub saved_eur_minor: i64,
}

#[derive(Debug, Clone)]
pub enum LoyaltyCommand {
    /// A booking of this user was confirmed (paid).
    RecordBookingConfirmed {
        booking_id: BookingId,
    },
    RecordBookingCompleted {
        booking_id: BookingId,
    },
    RecordReviewWritten {
        booking_id: BookingId,
    },
    RecordReferral {
        referred: UserId,
    },
    /// The booking was refunded: take back what it earned (as far as the balance allows).
    ReverseForBooking {
        booking_id: BookingId,
    },
    Redeem {
        booking_id: BookingId,
        points: i64,
        value: Money,
    },
    /// An admin's correction, with the reason on the event metadata.
    Adjust {
        delta: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum LoyaltyEvent {
    PointsAwarded {
        points: i64,
        reason: AwardReason,
        booking_id: Option<BookingId>,
        /// What the award is for (a booking id, a referred user id): one award per source and reason.
        source: String,
    },
    PointsReversed {
        booking_id: BookingId,
        points: i64,
    },
    PointsRedeemed {
        booking_id: BookingId,
        points: i64,
        value: Money,
    },
    PointsAdjusted {
        delta: i64,
    },
    BadgeEarned {
        badge: Badge,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoyaltyError {
    #[error("points for {0:?} were already awarded for this source")]
    AlreadyAwarded(AwardReason),
    #[error("not enough points: balance {balance}, needed {needed}")]
    InsufficientPoints { balance: i64, needed: i64 },
    #[error("points must be positive")]
    NonPositive,
    #[error("an adjustment of zero changes nothing")]
    EmptyAdjustment,
    #[error("nothing to reverse for booking {0}")]
    NothingToReverse(BookingId),
    #[error("an adjustment is at most {max} points either way")]
    AdjustmentOutOfRange { max: i64 },
}

/// The largest adjustment an admin may make at once, either way. It keeps every balance far
/// from `i64`'s limits, so the arithmetic on balances never overflows.
pub const MAX_ADJUSTMENT: i64 = 1_000_000_000;

/// The loyalty aggregate.
#[derive(Debug)]
pub struct LoyaltyAggregate;

fn award(
    account: &LoyaltyAccount,
    points: i64,
    reason: AwardReason,
    booking_id: Option<BookingId>,
    source: String,
) -> Result<LoyaltyEvent, LoyaltyError> {
    if account.awards.contains(&(source.clone(), reason)) {
        return Err(LoyaltyError::AlreadyAwarded(reason));
    }
    Ok(LoyaltyEvent::PointsAwarded {
        points,
        reason,
        booking_id,
        source,
    })
}

impl Aggregate for LoyaltyAggregate {
    type State = LoyaltyAccount;
    type Command = LoyaltyCommand;
    type Event = LoyaltyEvent;
    type Error = LoyaltyError;
    const CATEGORY: &'static str = "loyalty";

    fn decide(
        a: &LoyaltyAccount,
        command: &LoyaltyCommand,
    ) -> Result<Vec<LoyaltyEvent>, LoyaltyError> {
        let badge = |b: Badge, earned: bool| {
            (earned && !a.badges.contains(&b)).then_some(LoyaltyEvent::BadgeEarned { badge: b })
        };
        Ok(match command {
            LoyaltyCommand::RecordBookingConfirmed { booking_id } => {
                if a.awards
                    .iter()
                    .any(|(_, r)| *r == AwardReason::FirstBooking)
                {
                    // Only the first booking earns points here; later ones earn on completion.
                    return Ok(Vec::new());
                }
                let mut events = vec![award(
                    a,
                    FIRST_BOOKING_POINTS,
                    AwardReason::FirstBooking,
                    Some(*booking_id),
                    booking_id.to_string(),
                )?];
                events.extend(badge(Badge::FirstTraveler, true));
                events
            }
            LoyaltyCommand::RecordBookingCompleted { booking_id } => {
                let mut events = vec![award(
                    a,
                    BOOKING_COMPLETED_POINTS,
                    AwardReason::BookingCompleted,
                    Some(*booking_id),
                    booking_id.to_string(),
                )?];
                events.extend(badge(
                    Badge::GlobeTrotter,
                    a.completed + 1 >= GLOBE_TROTTER_BOOKINGS,
                ));
                events
            }
            LoyaltyCommand::RecordReviewWritten { booking_id } => {
                let mut events = vec![award(
                    a,
                    REVIEW_POINTS,
                    AwardReason::ReviewWritten,
                    Some(*booking_id),
                    booking_id.to_string(),
                )?];
                events.extend(badge(
                    Badge::SocialButterfly,
                    a.reviews + 1 >= SOCIAL_BUTTERFLY_REVIEWS,
                ));
                events
            }
            LoyaltyCommand::RecordReferral { referred } => {
                vec![award(
                    a,
                    REFERRAL_POINTS,
                    AwardReason::Referral,
                    None,
                    referred.to_string(),
                )?]
            }
            LoyaltyCommand::ReverseForBooking { booking_id } => {
                let earned = a.by_booking.get(booking_id).copied().unwrap_or(0);
                // Points already spent cannot be taken back below zero.
                let points = earned.min(a.balance);
                if points <= 0 {
                    return Err(LoyaltyError::NothingToReverse(*booking_id));
                }
                vec![LoyaltyEvent::PointsReversed {
                    booking_id: *booking_id,
                    points,
                }]
            }
            LoyaltyCommand::Redeem {
                booking_id,
                points,
                value,
            } => {
                if *points <= 0 {
                    return Err(LoyaltyError::NonPositive);
                }
                if *points > a.balance {
                    return Err(LoyaltyError::InsufficientPoints {
                        balance: a.balance,
                        needed: *points,
                    });
                }
                let saved = if value.currency == Currency::EUR {
                    a.saved_eur_minor + value.minor
                } else {
                    a.saved_eur_minor
                };
                let mut events = vec![LoyaltyEvent::PointsRedeemed {
                    booking_id: *booking_id,
                    points: *points,
                    value: *value,
                }];
                events.extend(badge(
                    Badge::BudgetMaster,
                    saved >= BUDGET_MASTER_SAVINGS_EUR_MINOR,
                ));
                events
            }
            LoyaltyCommand::Adjust { delta } => {
                if *delta == 0 {
                    return Err(LoyaltyError::EmptyAdjustment);
                }
                if delta.checked_abs().is_none_or(|d| d > MAX_ADJUSTMENT) {
                    return Err(LoyaltyError::AdjustmentOutOfRange {
                        max: MAX_ADJUSTMENT,
                    });
                }
                if a.balance.checked_add(*delta).is_none_or(|b| b < 0) {
                    return Err(LoyaltyError::InsufficientPoints {
                        balance: a.balance,
                        needed: -delta,
                    });
                }
                vec![LoyaltyEvent::PointsAdjusted { delta: *delta }]
            }
        })
    }

    fn evolve(mut a: LoyaltyAccount, event: &LoyaltyEvent) -> LoyaltyAccount {
        match event {
            LoyaltyEvent::PointsAwarded {
                points,
                reason,
                booking_id,
                source,
            } => {
                a.balance += points;
                a.awarded += points;
                a.awards.insert((source.clone(), *reason));
                if let Some(b) = booking_id {
                    *a.by_booking.entry(*b).or_default() += points;
                }
                match reason {
                    AwardReason::BookingCompleted => a.completed += 1,
                    AwardReason::ReviewWritten => a.reviews += 1,
                    AwardReason::FirstBooking | AwardReason::Referral => {}
                }
            }
            LoyaltyEvent::PointsReversed { booking_id, points } => {
                a.balance -= points;
                a.reversed += points;
                if let Some(earned) = a.by_booking.get_mut(booking_id) {
                    *earned -= points;
                }
            }
            LoyaltyEvent::PointsRedeemed { points, value, .. } => {
                a.balance -= points;
                a.redeemed += points;
                if value.currency == Currency::EUR {
                    a.saved_eur_minor += value.minor;
                }
            }
            LoyaltyEvent::PointsAdjusted { delta } => {
                a.balance += delta;
                a.adjusted += delta;
            }
            LoyaltyEvent::BadgeEarned { badge } => {
                a.badges.insert(*badge);
            }
        }
        a
    }
}
