//! Payments of bookings: an intent at the payment provider, its outcome, refunds, and the
//! escrow of the provider's share.
//!
//! ```text
//!   Succeeded ──Release──▶ released (provider share = share(paid − refunded), commission the rest)
//!                             │ StartTransfer ──▶ TransferStarted ──CompleteTransfer──▶ FundsTransferred
//!                             │                          └────────FailTransfer──────▶ TransferFailed
//!                             │ StartReversal ──▶ ReversalStarted ──CompleteReversal──▶ TransferReversed
//! ```
//! Invariants: refunds requested (and not failed) never exceed what succeeded; what was
//! transferred (net of reversals, counting a transfer under way) never exceeds the provider's
//! share of what is paid and not refunded or being refunded ([`Payment::entitled_share`]); a
//! refund after the release states the part the provider gives back and the part of the
//! commission the platform gives back ([`RefundSplit`]), so the ledger needs no other state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::receipt::DocumentNumber;
use crate::values::{BookingId, Currency, Money, PaymentId, UserId};

/// The platform's commission on `net` minor units at `commission_bp` basis points, rounded half
/// up to a minor unit. Monotone in `net`, so the provider's share is too.
pub fn commission_of(net: i64, commission_bp: u32) -> i64 {
    let c = (i128::from(net) * i128::from(commission_bp) + 5_000) / 10_000;
    i64::try_from(c).unwrap_or(i64::MAX)
}

/// The provider's share of `net`: what is left after the commission.
pub fn share_of(net: i64, commission_bp: u32) -> i64 {
    net - commission_of(net, commission_bp)
}

/// How a refund after the release is borne: the provider gives back the part of its share the
/// refund removes, the platform the rest (its commission on the refunded amount).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundSplit {
    pub provider_id: UserId,
    pub provider_part: i64,
    pub commission_part: i64,
}

/// The provider's share after the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    pub provider_id: UserId,
    pub commission_bp: u32,
    /// Transfers that went out, by id.
    pub transfers: Vec<Transfer>,
    /// A transfer decided and not yet answered by the gateway.
    pub pending_transfer: Option<(uuid::Uuid, i64)>,
    /// A reversal decided and not yet answered: (reversal id, transfer id, amount).
    pub pending_reversal: Option<(uuid::Uuid, uuid::Uuid, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub transfer_id: uuid::Uuid,
    pub transfer_ref: String,
    pub amount: i64,
    pub reversed: i64,
}

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
    /// Set when the provider's share was released (the slot ended, the dispute window passed).
    pub escrow: Option<Escrow>,
    /// The receipt issued for the payment, once it succeeded.
    #[serde(default)]
    pub receipt: Option<DocumentNumber>,
    /// The tax rate the receipt stated (its credit notes state the same).
    #[serde(default)]
    pub receipt_tax_rate_bp: u32,
    /// The credit notes issued for its refunds, by refund.
    #[serde(default)]
    pub credit_notes: BTreeMap<uuid::Uuid, DocumentNumber>,
}

impl Payment {
    /// What went to the provider, net of reversals; a transfer under way counts, a reversal under
    /// way does not (until the gateway confirms it, the money is the provider's).
    pub fn transferred(&self) -> i64 {
        self.escrow.as_ref().map_or(0, |e| {
            e.transfers
                .iter()
                .map(|t| t.amount - t.reversed)
                .sum::<i64>()
                + e.pending_transfer.map_or(0, |(_, a)| a)
        })
    }

    /// The provider's share of what was paid and is not refunded nor being refunded.
    pub fn entitled_share(&self) -> i64 {
        self.escrow.as_ref().map_or(0, |e| {
            share_of(
                self.amount.minor - self.committed_refunds(),
                e.commission_bp,
            )
        })
    }

    /// What must still go to the provider.
    pub fn transfer_due(&self) -> i64 {
        (self.entitled_share() - self.transferred()).max(0)
    }

    /// What the provider must give back (a refund after the transfer).
    pub fn reversal_due(&self) -> i64 {
        (self.transferred() - self.entitled_share()).max(0)
    }

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

/// One value per aggregate instance, so the size gap between variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
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
    /// The slot ended and the dispute window passed: the provider's share is theirs.
    Release {
        provider_id: UserId,
        commission_bp: u32,
    },
    /// Decides a transfer of what is due, before asking the gateway.
    StartTransfer {
        transfer_id: uuid::Uuid,
    },
    CompleteTransfer {
        transfer_id: uuid::Uuid,
        transfer_ref: String,
    },
    FailTransfer {
        transfer_id: uuid::Uuid,
        reason: String,
    },
    /// Decides a reversal of what the provider must give back, before asking the gateway.
    StartReversal {
        reversal_id: uuid::Uuid,
    },
    CompleteReversal {
        reversal_id: uuid::Uuid,
        reversal_ref: String,
    },
    /// Issues the receipt of a succeeded payment under `number` (the next of the year's
    /// series), with the tax included at `tax_rate_bp`.
    IssueReceipt {
        number: DocumentNumber,
        tax_rate_bp: u32,
    },
    /// Issues the credit note of a succeeded refund under `number`.
    IssueCreditNote {
        refund_id: uuid::Uuid,
        number: DocumentNumber,
    },
    FailReversal {
        reversal_id: uuid::Uuid,
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
        /// v2: who bears a refund after the release (`None` before it: the money was held).
        split: Option<RefundSplit>,
    },
    RefundFailed {
        payment_id: PaymentId,
        booking_id: BookingId,
        refund_id: uuid::Uuid,
        reason: String,
    },
    FundsReleased {
        payment_id: PaymentId,
        booking_id: BookingId,
        provider_id: UserId,
        commission_bp: u32,
        /// What was paid and not refunded when released: the provider share plus the commission.
        released: Money,
        provider_share: Money,
        commission: Money,
    },
    TransferStarted {
        payment_id: PaymentId,
        booking_id: BookingId,
        provider_id: UserId,
        transfer_id: uuid::Uuid,
        amount: Money,
    },
    FundsTransferred {
        payment_id: PaymentId,
        booking_id: BookingId,
        provider_id: UserId,
        transfer_id: uuid::Uuid,
        transfer_ref: String,
        amount: Money,
    },
    TransferFailed {
        payment_id: PaymentId,
        booking_id: BookingId,
        provider_id: UserId,
        transfer_id: uuid::Uuid,
        reason: String,
    },
    ReversalStarted {
        payment_id: PaymentId,
        booking_id: BookingId,
        provider_id: UserId,
        reversal_id: uuid::Uuid,
        transfer_id: uuid::Uuid,
        amount: Money,
    },
    TransferReversed {
        payment_id: PaymentId,
        booking_id: BookingId,
        provider_id: UserId,
        reversal_id: uuid::Uuid,
        transfer_id: uuid::Uuid,
        reversal_ref: String,
        amount: Money,
    },
    ReversalFailed {
        payment_id: PaymentId,
        booking_id: BookingId,
        provider_id: UserId,
        reversal_id: uuid::Uuid,
        reason: String,
    },
    /// The customer's receipt: what was paid, with the tax it includes.
    ReceiptIssued {
        payment_id: PaymentId,
        booking_id: BookingId,
        number: DocumentNumber,
        amount: Money,
        tax_rate_bp: u32,
        tax: Money,
    },
    /// A refund's credit note, referencing the receipt it corrects.
    CreditNoteIssued {
        payment_id: PaymentId,
        booking_id: BookingId,
        refund_id: uuid::Uuid,
        number: DocumentNumber,
        receipt: DocumentNumber,
        amount: Money,
        tax_rate_bp: u32,
        tax: Money,
    },
}

impl PaymentEvent {
    /// The payment (and its booking) every payment event is about.
    pub fn ids(&self) -> (PaymentId, BookingId) {
        match self {
            Self::PaymentIntentCreated {
                payment_id,
                booking_id,
                ..
            }
            | Self::PaymentSucceeded {
                payment_id,
                booking_id,
                ..
            }
            | Self::PaymentFailed {
                payment_id,
                booking_id,
                ..
            }
            | Self::RefundRequested {
                payment_id,
                booking_id,
                ..
            }
            | Self::RefundSucceeded {
                payment_id,
                booking_id,
                ..
            }
            | Self::RefundFailed {
                payment_id,
                booking_id,
                ..
            }
            | Self::FundsReleased {
                payment_id,
                booking_id,
                ..
            }
            | Self::TransferStarted {
                payment_id,
                booking_id,
                ..
            }
            | Self::FundsTransferred {
                payment_id,
                booking_id,
                ..
            }
            | Self::TransferFailed {
                payment_id,
                booking_id,
                ..
            }
            | Self::ReversalStarted {
                payment_id,
                booking_id,
                ..
            }
            | Self::TransferReversed {
                payment_id,
                booking_id,
                ..
            }
            | Self::ReversalFailed {
                payment_id,
                booking_id,
                ..
            }
            | Self::ReceiptIssued {
                payment_id,
                booking_id,
                ..
            }
            | Self::CreditNoteIssued {
                payment_id,
                booking_id,
                ..
            } => (*payment_id, *booking_id),
        }
    }
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
    #[error("the provider's share was already released")]
    AlreadyReleased,
    #[error("the provider's share is not released yet")]
    NotReleased,
    #[error("nothing is left to release: everything paid is refunded or being refunded")]
    NothingToRelease,
    #[error("nothing is due to the provider")]
    NothingToTransfer,
    #[error("nothing is to be given back by the provider")]
    NothingToReverse,
    #[error("a transfer or reversal is already under way")]
    TransferUnderWay,
    #[error("transfer or reversal {0} is not the one under way")]
    NotUnderWay(uuid::Uuid),
    #[error("the document is already issued as {0}")]
    AlreadyIssued(DocumentNumber),
    #[error("only a succeeded payment has a receipt, and only a succeeded refund a credit note")]
    NothingToDocument,
}

fn escrow(p: &Payment) -> Result<&Escrow, PaymentError> {
    p.escrow.as_ref().ok_or(PaymentError::NotReleased)
}

fn minor(currency: Currency, minor: i64) -> Money {
    Money { minor, currency }
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
                let split = p.escrow.as_ref().map(|e| {
                    let before = p.amount.minor - p.refunded();
                    let provider_part = share_of(before, e.commission_bp)
                        - share_of(before - r.amount.minor, e.commission_bp);
                    RefundSplit {
                        provider_id: e.provider_id,
                        provider_part,
                        commission_part: r.amount.minor - provider_part,
                    }
                });
                PaymentEvent::RefundSucceeded {
                    payment_id,
                    booking_id,
                    refund_id: *refund_id,
                    amount: r.amount,
                    split,
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
            PaymentCommand::Release {
                provider_id,
                commission_bp,
            } => {
                if p.status != PaymentStatus::Succeeded {
                    return Err(PaymentError::NotSucceeded);
                }
                if p.escrow.is_some() {
                    return Err(PaymentError::AlreadyReleased);
                }
                if p.amount.minor - p.committed_refunds() <= 0 {
                    return Err(PaymentError::NothingToRelease);
                }
                let released = p.amount.minor - p.refunded();
                let share = share_of(released, *commission_bp);
                let money = |minor| Money {
                    minor,
                    currency: p.amount.currency,
                };
                PaymentEvent::FundsReleased {
                    payment_id,
                    booking_id,
                    provider_id: *provider_id,
                    commission_bp: *commission_bp,
                    released: money(released),
                    provider_share: money(share),
                    commission: money(released - share),
                }
            }
            PaymentCommand::StartTransfer { transfer_id } => {
                let e = escrow(p)?;
                if e.pending_transfer.is_some() || e.pending_reversal.is_some() {
                    return Err(PaymentError::TransferUnderWay);
                }
                let due = p.transfer_due();
                if due == 0 {
                    return Err(PaymentError::NothingToTransfer);
                }
                PaymentEvent::TransferStarted {
                    payment_id,
                    booking_id,
                    provider_id: e.provider_id,
                    transfer_id: *transfer_id,
                    amount: minor(p.amount.currency, due),
                }
            }
            PaymentCommand::CompleteTransfer {
                transfer_id,
                transfer_ref,
            } => {
                let e = escrow(p)?;
                match e.pending_transfer {
                    Some((id, amount)) if id == *transfer_id => PaymentEvent::FundsTransferred {
                        payment_id,
                        booking_id,
                        provider_id: e.provider_id,
                        transfer_id: *transfer_id,
                        transfer_ref: transfer_ref.clone(),
                        amount: minor(p.amount.currency, amount),
                    },
                    _ => return Err(PaymentError::NotUnderWay(*transfer_id)),
                }
            }
            PaymentCommand::FailTransfer {
                transfer_id,
                reason,
            } => {
                let e = escrow(p)?;
                match e.pending_transfer {
                    Some((id, _)) if id == *transfer_id => PaymentEvent::TransferFailed {
                        payment_id,
                        booking_id,
                        provider_id: e.provider_id,
                        transfer_id: *transfer_id,
                        reason: reason.clone(),
                    },
                    _ => return Err(PaymentError::NotUnderWay(*transfer_id)),
                }
            }
            PaymentCommand::StartReversal { reversal_id } => {
                let e = escrow(p)?;
                if e.pending_transfer.is_some() || e.pending_reversal.is_some() {
                    return Err(PaymentError::TransferUnderWay);
                }
                // The latest transfer first; a larger reversal takes several steps.
                let due = p.reversal_due();
                let from = e.transfers.iter().rev().find(|t| t.amount > t.reversed);
                let (Some(t), true) = (from, due > 0) else {
                    return Err(PaymentError::NothingToReverse);
                };
                PaymentEvent::ReversalStarted {
                    payment_id,
                    booking_id,
                    provider_id: e.provider_id,
                    reversal_id: *reversal_id,
                    transfer_id: t.transfer_id,
                    amount: minor(p.amount.currency, due.min(t.amount - t.reversed)),
                }
            }
            PaymentCommand::CompleteReversal {
                reversal_id,
                reversal_ref,
            } => {
                let e = escrow(p)?;
                match e.pending_reversal {
                    Some((id, transfer_id, amount)) if id == *reversal_id => {
                        PaymentEvent::TransferReversed {
                            payment_id,
                            booking_id,
                            provider_id: e.provider_id,
                            reversal_id: *reversal_id,
                            transfer_id,
                            reversal_ref: reversal_ref.clone(),
                            amount: minor(p.amount.currency, amount),
                        }
                    }
                    _ => return Err(PaymentError::NotUnderWay(*reversal_id)),
                }
            }
            PaymentCommand::FailReversal {
                reversal_id,
                reason,
            } => {
                let e = escrow(p)?;
                match e.pending_reversal {
                    Some((id, _, _)) if id == *reversal_id => PaymentEvent::ReversalFailed {
                        payment_id,
                        booking_id,
                        provider_id: e.provider_id,
                        reversal_id: *reversal_id,
                        reason: reason.clone(),
                    },
                    _ => return Err(PaymentError::NotUnderWay(*reversal_id)),
                }
            }
            PaymentCommand::IssueReceipt {
                number,
                tax_rate_bp,
            } => {
                if let Some(issued) = p.receipt {
                    return Err(PaymentError::AlreadyIssued(issued));
                }
                if p.status != PaymentStatus::Succeeded {
                    return Err(PaymentError::NothingToDocument);
                }
                PaymentEvent::ReceiptIssued {
                    payment_id,
                    booking_id,
                    number: *number,
                    amount: p.amount,
                    tax_rate_bp: *tax_rate_bp,
                    tax: minor(
                        p.amount.currency,
                        crate::receipt::tax_included(p.amount.minor, *tax_rate_bp),
                    ),
                }
            }
            PaymentCommand::IssueCreditNote { refund_id, number } => {
                if let Some(issued) = p.credit_notes.get(refund_id) {
                    return Err(PaymentError::AlreadyIssued(*issued));
                }
                let r = refund(refund_id)?;
                let (Some(receipt), RefundStatus::Succeeded) = (p.receipt, r.status) else {
                    return Err(PaymentError::NothingToDocument);
                };
                let tax_rate_bp = p.receipt_tax_rate_bp;
                PaymentEvent::CreditNoteIssued {
                    payment_id,
                    booking_id,
                    refund_id: *refund_id,
                    number: *number,
                    receipt,
                    amount: r.amount,
                    tax_rate_bp,
                    tax: minor(
                        r.amount.currency,
                        crate::receipt::tax_included(r.amount.minor, tax_rate_bp),
                    ),
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
                escrow: None,
                receipt: None,
                receipt_tax_rate_bp: 0,
                credit_notes: BTreeMap::new(),
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
                    PaymentEvent::FundsReleased {
                        provider_id,
                        commission_bp,
                        ..
                    } => {
                        p.escrow = Some(Escrow {
                            provider_id: *provider_id,
                            commission_bp: *commission_bp,
                            transfers: Vec::new(),
                            pending_transfer: None,
                            pending_reversal: None,
                        })
                    }
                    PaymentEvent::TransferStarted {
                        transfer_id,
                        amount,
                        ..
                    } => {
                        if let Some(e) = p.escrow.as_mut() {
                            e.pending_transfer = Some((*transfer_id, amount.minor));
                        }
                    }
                    PaymentEvent::FundsTransferred {
                        transfer_id,
                        transfer_ref,
                        amount,
                        ..
                    } => {
                        if let Some(e) = p.escrow.as_mut() {
                            e.pending_transfer = None;
                            e.transfers.push(Transfer {
                                transfer_id: *transfer_id,
                                transfer_ref: transfer_ref.clone(),
                                amount: amount.minor,
                                reversed: 0,
                            });
                        }
                    }
                    PaymentEvent::TransferFailed { .. } => {
                        if let Some(e) = p.escrow.as_mut() {
                            e.pending_transfer = None;
                        }
                    }
                    PaymentEvent::ReversalStarted {
                        reversal_id,
                        transfer_id,
                        amount,
                        ..
                    } => {
                        if let Some(e) = p.escrow.as_mut() {
                            e.pending_reversal = Some((*reversal_id, *transfer_id, amount.minor));
                        }
                    }
                    PaymentEvent::TransferReversed {
                        transfer_id,
                        amount,
                        ..
                    } => {
                        if let Some(e) = p.escrow.as_mut() {
                            e.pending_reversal = None;
                            if let Some(t) = e
                                .transfers
                                .iter_mut()
                                .find(|t| t.transfer_id == *transfer_id)
                            {
                                t.reversed += amount.minor;
                            }
                        }
                    }
                    PaymentEvent::ReversalFailed { .. } => {
                        if let Some(e) = p.escrow.as_mut() {
                            e.pending_reversal = None;
                        }
                    }
                    PaymentEvent::ReceiptIssued {
                        number,
                        tax_rate_bp,
                        ..
                    } => {
                        p.receipt = Some(*number);
                        p.receipt_tax_rate_bp = *tax_rate_bp;
                    }
                    PaymentEvent::CreditNoteIssued {
                        refund_id, number, ..
                    } => {
                        p.credit_notes.insert(*refund_id, *number);
                    }
                }
                PaymentState::Created(p)
            }
            (state, _) => state,
        }
    }
}
