//! Payments of bookings: an intent at the payment provider, its outcome, and refunds.
//! Invariant: refunds requested (and not failed) never exceed what succeeded.

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{BookingId, Money, PaymentId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Requested,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: uuid::Uuid,
    pub amount: Money,
    pub status: RefundStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    pub booking_id: BookingId,
    pub customer_id: UserId,
    pub amount: Money,
    /// `stripe` or `simulated`.
    pub provider: String,
    /// The provider's id of the intent (`pi_…`).
    pub provider_ref: String,
    pub status: PaymentStatus,
    pub refunds: Vec<Refund>,
}

impl Payment {
    /// Refunds requested or done (failed ones give the amount back).
    pub fn committed_refunds(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status != RefundStatus::Failed)
            .map(|r| r.amount.minor)
            .sum()
    }

    pub fn refunded(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Succeeded)
            .map(|r| r.amount.minor)
            .sum()
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub enum PaymentState {
    #[default]
    New,
    Created(Payment),
}

impl PaymentState {
    pub fn payment(&self) -> Option<&Payment> {
        match self {
            Self::New => None,
            Self::Created(p) => Some(p),
        }
    }
}

#[derive(Debug, Clone)]
pub enum PaymentCommand {
    CreateIntent {
        id: PaymentId,
        booking_id: BookingId,
        customer_id: UserId,
        amount: Money,
        provider: String,
        provider_ref: String,
    },
    MarkSucceeded,
    MarkFailed {
        reason: String,
    },
    RequestRefund {
        refund_id: uuid::Uuid,
        amount: Money,
    },
    RefundSucceeded {
        refund_id: uuid::Uuid,
    },
    RefundFailed {
        refund_id: uuid::Uuid,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PaymentEvent {
    PaymentIntentCreated {
        payment_id: PaymentId,
        booking_id: BookingId,
        customer_id: UserId,
        amount: Money,
        provider: String,
        provider_ref: String,
    },
    PaymentSucceeded {
        payment_id: PaymentId,
        booking_id: BookingId,
        amount: Money,
    },
    PaymentFailed {
        payment_id: PaymentId,
        booking_id: BookingId,
        reason: String,
    },
    RefundRequested {
        payment_id: PaymentId,
        booking_id: BookingId,
        refund_id: uuid::Uuid,
        amount: Money,
    },
    RefundSucceeded {
        payment_id: PaymentId,
        booking_id: BookingId,
        refund_id: uuid::Uuid,
        amount: Money,
    },
    RefundFailed {
        payment_id: PaymentId,
        booking_id: BookingId,
        refund_id: uuid::Uuid,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment already exists")]
    AlreadyCreated,
    #[error("the payment does not exist")]
    NotCreated,
    #[error("the payment is {0:?}, not pending")]
    NotPending(PaymentStatus),
    #[error("only a succeeded payment can be refunded")]
    NotSucceeded,
    #[error(
        "refunds would exceed the {paid} paid ({committed} minor units already refunded or requested)"
    )]
    RefundExceedsPaid { paid: Money, committed: i64 },
    #[error("refund amount must be positive and in the payment's currency")]
    InvalidRefund,
    #[error("refund {0} is unknown")]
    UnknownRefund(uuid::Uuid),
    #[error("refund {0} already finished")]
    RefundFinished(uuid::Uuid),
    #[error("refund {0} was already requested")]
    DuplicateRefund(uuid::Uuid),
}

/// The payment aggregate.
#[derive(Debug)]
pub struct PaymentAggregate;

impl Aggregate for PaymentAggregate {
    type State = PaymentState;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    const CATEGORY: &'static str = "payment";

    fn decide(
        state: &PaymentState,
        command: &PaymentCommand,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let p = match (state, command) {
            (
                PaymentState::New,
                PaymentCommand::CreateIntent {
                    id,
                    booking_id,
                    customer_id,
                    amount,
                    provider,
                    provider_ref,
                },
            ) => {
                return Ok(vec![PaymentEvent::PaymentIntentCreated {
                    payment_id: *id,
                    booking_id: *booking_id,
                    customer_id: *customer_id,
                    amount: *amount,
                    provider: provider.clone(),
                    provider_ref: provider_ref.clone(),
                }]);
            }
            (PaymentState::Created(_), PaymentCommand::CreateIntent { .. }) => {
                return Err(PaymentError::AlreadyCreated);
            }
            (PaymentState::New, _) => return Err(PaymentError::NotCreated),
            (PaymentState::Created(p), _) => p,
        };
        let (payment_id, booking_id) = (p.id, p.booking_id);
        let refund = |id: &uuid::Uuid| {
            p.refunds
                .iter()
                .find(|r| r.refund_id == *id)
                .ok_or(PaymentError::UnknownRefund(*id))
        };
        Ok(vec![match command {
            PaymentCommand::CreateIntent { .. } => return Err(PaymentError::AlreadyCreated),
            PaymentCommand::MarkSucceeded => {
                if p.status != PaymentStatus::Pending {
                    return Err(PaymentError::NotPending(p.status));
                }
                PaymentEvent::PaymentSucceeded {
                    payment_id,
                    booking_id,
                    amount: p.amount,
                }
            }
            PaymentCommand::MarkFailed { reason } => {
                if p.status != PaymentStatus::Pending {
                    return Err(PaymentError::NotPending(p.status));
                }
                PaymentEvent::PaymentFailed {
                    payment_id,
                    booking_id,
                    reason: reason.clone(),
                }
            }
            PaymentCommand::RequestRefund { refund_id, amount } => {
                if p.status != PaymentStatus::Succeeded {
                    return Err(PaymentError::NotSucceeded);
                }
                if p.refunds.iter().any(|r| r.refund_id == *refund_id) {
                    return Err(PaymentError::DuplicateRefund(*refund_id));
                }
                if amount.minor <= 0 || amount.currency != p.amount.currency {
                    return Err(PaymentError::InvalidRefund);
                }
                if p.committed_refunds() + amount.minor > p.amount.minor {
                    return Err(PaymentError::RefundExceedsPaid {
                        paid: p.amount,
                        committed: p.committed_refunds(),
                    });
                }
                PaymentEvent::RefundRequested {
                    payment_id,
                    booking_id,
                    refund_id: *refund_id,
                    amount: *amount,
                }
            }
            PaymentCommand::RefundSucceeded { refund_id } => {
                let r = refund(refund_id)?;
                if r.status != RefundStatus::Requested {
                    return Err(PaymentError::RefundFinished(*refund_id));
                }
                PaymentEvent::RefundSucceeded {
                    payment_id,
                    booking_id,
                    refund_id: *refund_id,
                    amount: r.amount,
                }
            }
            PaymentCommand::RefundFailed { refund_id, reason } => {
                let r = refund(refund_id)?;
                if r.status != RefundStatus::Requested {
                    return Err(PaymentError::RefundFinished(*refund_id));
                }
                PaymentEvent::RefundFailed {
                    payment_id,
                    booking_id,
                    refund_id: *refund_id,
                    reason: reason.clone(),
                }
            }
        }])
    }

    fn evolve(state: PaymentState, event: &PaymentEvent) -> PaymentState {
        match (state, event) {
            (
                PaymentState::New,
                PaymentEvent::PaymentIntentCreated {
                    payment_id,
                    booking_id,
                    customer_id,
                    amount,
                    provider,
                    provider_ref,
                },
            ) => PaymentState::Created(Payment {
                id: *payment_id,
                booking_id: *booking_id,
                customer_id: *customer_id,
                amount: *amount,
                provider: provider.clone(),
                provider_ref: provider_ref.clone(),
                status: PaymentStatus::Pending,
                refunds: Vec::new(),
            }),
            (PaymentState::Created(mut p), e) => {
                let set = |p: &mut Payment, id: &uuid::Uuid, status| {
                    if let Some(r) = p.refunds.iter_mut().find(|r| r.refund_id == *id) {
                        r.status = status;
                    }
                };
                match e {
                    PaymentEvent::PaymentIntentCreated { .. } => {}
                    PaymentEvent::PaymentSucceeded { .. } => p.status = PaymentStatus::Succeeded,
                    PaymentEvent::PaymentFailed { .. } => p.status = PaymentStatus::Failed,
                    PaymentEvent::RefundRequested {
                        refund_id, amount, ..
                    } => p.refunds.push(Refund {
                        refund_id: *refund_id,
                        amount: *amount,
                        status: RefundStatus::Requested,
                    }),
                    PaymentEvent::RefundSucceeded { refund_id, .. } => {
                        set(&mut p, refund_id, RefundStatus::Succeeded)
                    }
                    PaymentEvent::RefundFailed { refund_id, .. } => {
                        set(&mut p, refund_id, RefundStatus::Failed)
                    }
                }
                PaymentState::Created(p)
            }
            (state, _) => state,
        }
    }
}
