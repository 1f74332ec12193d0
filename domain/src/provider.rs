//! A provider's money terms and payout account: the commission the platform keeps (snapshotted
//! into each booking when it is placed) and the connected account at the payment gateway that
//! receives the provider's share.
//!
//! ```text
//!   (none) ──StartOnboarding──▶ Onboarding ──Activate──▶ Active ◀──Activate── Restricted
//!                                   │                      │                      ▲
//!                                   └──────Restrict────────┴──────Restrict────────┘
//! ```
//! A provider sells from day one; released money whose transfer cannot go out yet (no active
//! account) is remembered here (`TransferAwaitingAccount`) and sent when the account activates.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::receipt::DocumentNumber;
use crate::values::{Currency, Money, PaymentId, UserId, derived_id};

/// The platform's commission when none was set for the provider: 15 %.
pub const DEFAULT_COMMISSION_BP: u32 = 1500;
/// A commission above 50 % is refused: it is almost surely a typo for a smaller number.
pub const MAX_COMMISSION_BP: u32 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Created at the gateway; the provider has not finished its onboarding.
    Onboarding,
    /// The gateway accepts transfers to it.
    Active,
    /// The gateway stopped transfers (missing details, verification, …).
    Restricted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutAccount {
    /// `stripe` or `simulated`.
    pub gateway: String,
    /// The gateway's id of the connected account (`acct_…`).
    pub account_ref: String,
    pub status: AccountStatus,
    /// Why the gateway restricted it, while restricted.
    pub restriction: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provider {
    pub id: UserId,
    pub commission_bp: u32,
    pub account: Option<PayoutAccount>,
    /// Payments released while no account could take the transfer.
    pub waiting: BTreeSet<PaymentId>,
    /// Payouts from the connected account to the provider's bank, by the gateway's id.
    pub payouts: BTreeMap<String, PayoutStatus>,
    /// Commission accrued and not invoiced yet, per month (`2026-11`) and currency.
    pub accrued: BTreeMap<String, BTreeMap<Currency, Accrual>>,
    /// The months invoiced, with their invoice's number.
    pub invoiced: BTreeMap<String, DocumentNumber>,
    /// People the provider lets check tickets in at the doors of their slots.
    #[serde(default)]
    pub door_staff: BTreeSet<UserId>,
}

/// At most this many door staff per provider.
pub const DOOR_STAFF_MAX: usize = 200;

/// The commission of one month in one currency: kept at releases, less what refunds after the
/// release gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accrual {
    pub commission_minor: i64,
    /// Releases and refunds that made it.
    pub entries: u32,
}

/// One currency's line of a commission invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub currency: Currency,
    pub commission_minor: i64,
    pub entries: u32,
}

/// The month after `month` (`2026-12` → `2027-01`); `None` when it is not `YYYY-MM`.
pub fn next_month(month: &str) -> Option<String> {
    let (y, m) = month.split_once('-')?;
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    if !(1..=12).contains(&m) {
        return None;
    }
    Some(if m == 12 {
        format!("{}-01", y + 1)
    } else {
        format!("{y}-{:02}", m + 1)
    })
}

/// The document id of a provider's invoice for `month` (what its series number is for).
pub fn invoice_document(provider_id: UserId, month: &str) -> uuid::Uuid {
    derived_id(provider_id.0, format!("invoice/{month}").as_bytes())
}

/// Where a payout to the provider's bank ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    Paid,
    Failed,
}

/// What the gateway reports of a payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayoutOutcome {
    Paid,
    Failed { reason: String },
}

impl Provider {
    pub fn can_receive_transfers(&self) -> bool {
        self.account
            .as_ref()
            .is_some_and(|a| a.status == AccountStatus::Active)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
// One state per loaded stream, short-lived: boxing would buy nothing but an allocation.
#[allow(clippy::large_enum_variant)]
pub enum ProviderState {
    /// No event yet: default terms, no account.
    #[default]
    New,
    Known(Provider),
}

impl ProviderState {
    /// The commission a booking placed now snapshots.
    pub fn commission_bp(&self) -> u32 {
        match self {
            Self::New => DEFAULT_COMMISSION_BP,
            Self::Known(p) => p.commission_bp,
        }
    }

    pub fn provider(&self) -> Option<&Provider> {
        match self {
            Self::New => None,
            Self::Known(p) => Some(p),
        }
    }

    pub fn can_receive_transfers(&self) -> bool {
        self.provider().is_some_and(Provider::can_receive_transfers)
    }
}

#[derive(Debug, Clone)]
pub enum ProviderCommand {
    StartOnboarding {
        provider_id: UserId,
        gateway: String,
        account_ref: String,
    },
    /// The gateway reports the account can receive transfers.
    Activate { account_ref: String },
    /// The gateway reports the account cannot (yet, or any more).
    Restrict { account_ref: String, reason: String },
    SetCommission {
        provider_id: UserId,
        commission_bp: u32,
        reason: String,
    },
    /// A release found no active account: the transfer waits for one.
    AwaitAccount {
        provider_id: UserId,
        payment_id: PaymentId,
    },
    /// The gateway paid (or failed to pay) money out of the connected account to the bank.
    /// Reports arrive in any order and more than once: a paid payout may still fail (the bank
    /// returns it), a failed one is final, and a repeated report changes nothing.
    RecordPayout {
        account_ref: String,
        payout_ref: String,
        amount: Money,
        outcome: PayoutOutcome,
    },
    /// The platform kept (positive) or gave back (negative) commission on one of the
    /// provider's payments in `month`. A month already invoiced is closed: the amount goes to
    /// the next open month.
    Accrue {
        provider_id: UserId,
        payment_id: PaymentId,
        month: String,
        currency: Currency,
        commission_minor: i64,
    },
    /// Lets `user_id` check tickets in at the provider's doors (adding twice changes nothing).
    AddDoorStaff {
        provider_id: UserId,
        user_id: UserId,
    },
    /// No longer (removing someone who is not staff changes nothing).
    RemoveDoorStaff {
        provider_id: UserId,
        user_id: UserId,
    },
    /// Invoices a past month's commission under `number`.
    Invoice {
        month: String,
        number: DocumentNumber,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ProviderEvent {
    DoorStaffAdded {
        provider_id: UserId,
        user_id: UserId,
    },
    DoorStaffRemoved {
        provider_id: UserId,
        user_id: UserId,
    },
    PayoutAccountOpened {
        provider_id: UserId,
        gateway: String,
        account_ref: String,
    },
    PayoutAccountActivated {
        provider_id: UserId,
        account_ref: String,
    },
    PayoutAccountRestricted {
        provider_id: UserId,
        account_ref: String,
        reason: String,
    },
    CommissionRateSet {
        provider_id: UserId,
        commission_bp: u32,
        reason: String,
    },
    TransferAwaitingAccount {
        provider_id: UserId,
        payment_id: PaymentId,
    },
    PayoutPaid {
        provider_id: UserId,
        account_ref: String,
        payout_ref: String,
        amount: Money,
    },
    PayoutFailed {
        provider_id: UserId,
        account_ref: String,
        payout_ref: String,
        amount: Money,
        reason: String,
    },
    CommissionAccrued {
        provider_id: UserId,
        payment_id: PaymentId,
        month: String,
        currency: Currency,
        commission_minor: i64,
    },
    /// The platform's monthly commission invoice to the provider.
    CommissionInvoiced {
        provider_id: UserId,
        number: DocumentNumber,
        month: String,
        lines: Vec<InvoiceLine>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("the provider already has a payout account")]
    AccountExists,
    #[error("the provider has no payout account")]
    NoAccount,
    #[error("the gateway's account {got} is not this provider's ({expected})")]
    WrongAccount { expected: String, got: String },
    #[error("a commission is between 0 and {max} basis points", max = MAX_COMMISSION_BP)]
    CommissionOutOfRange,
    #[error("the commission is already {0} basis points")]
    CommissionUnchanged(u32),
    #[error("the account is already {0:?}")]
    StatusUnchanged(AccountStatus),
    #[error("no commission accrued in {0}")]
    NothingToInvoice(String),
    #[error("the month is already invoiced as {0}")]
    AlreadyInvoiced(DocumentNumber),
    #[error("{0:?} is not a month (YYYY-MM)")]
    NotAMonth(String),
    #[error("a provider has at most {DOOR_STAFF_MAX} door staff")]
    TooManyStaff,
    #[error("a provider is their own door staff already")]
    StaffIsProvider,
}

/// The provider aggregate (stream `provider-<user id>`).
#[derive(Debug)]
pub struct ProviderAggregate;

impl Aggregate for ProviderAggregate {
    type State = ProviderState;
    type Command = ProviderCommand;
    type Event = ProviderEvent;
    type Error = ProviderError;
    const CATEGORY: &'static str = "provider";

    fn decide(
        state: &ProviderState,
        command: &ProviderCommand,
    ) -> Result<Vec<ProviderEvent>, ProviderError> {
        let known = state.provider();
        let account = |got: &str| {
            let (p, a) = known
                .and_then(|p| p.account.as_ref().map(|a| (p, a)))
                .ok_or(ProviderError::NoAccount)?;
            if a.account_ref != got {
                return Err(ProviderError::WrongAccount {
                    expected: a.account_ref.clone(),
                    got: got.to_owned(),
                });
            }
            Ok((p.id, a))
        };
        Ok(vec![match command {
            ProviderCommand::StartOnboarding {
                provider_id,
                gateway,
                account_ref,
            } => {
                if known.is_some_and(|p| p.account.is_some()) {
                    return Err(ProviderError::AccountExists);
                }
                ProviderEvent::PayoutAccountOpened {
                    provider_id: *provider_id,
                    gateway: gateway.clone(),
                    account_ref: account_ref.clone(),
                }
            }
            ProviderCommand::Activate { account_ref } => {
                let (provider_id, a) = account(account_ref)?;
                if a.status == AccountStatus::Active {
                    return Err(ProviderError::StatusUnchanged(a.status));
                }
                ProviderEvent::PayoutAccountActivated {
                    provider_id,
                    account_ref: account_ref.clone(),
                }
            }
            ProviderCommand::Restrict {
                account_ref,
                reason,
            } => {
                let (provider_id, a) = account(account_ref)?;
                if a.status == AccountStatus::Restricted {
                    return Err(ProviderError::StatusUnchanged(a.status));
                }
                ProviderEvent::PayoutAccountRestricted {
                    provider_id,
                    account_ref: account_ref.clone(),
                    reason: reason.clone(),
                }
            }
            ProviderCommand::SetCommission {
                provider_id,
                commission_bp,
                reason,
            } => {
                if *commission_bp > MAX_COMMISSION_BP {
                    return Err(ProviderError::CommissionOutOfRange);
                }
                if state.commission_bp() == *commission_bp {
                    return Err(ProviderError::CommissionUnchanged(*commission_bp));
                }
                ProviderEvent::CommissionRateSet {
                    provider_id: *provider_id,
                    commission_bp: *commission_bp,
                    reason: reason.clone(),
                }
            }
            ProviderCommand::RecordPayout {
                account_ref,
                payout_ref,
                amount,
                outcome,
            } => {
                let (provider_id, _) = account(account_ref)?;
                let known = known.and_then(|p| p.payouts.get(payout_ref));
                match (outcome, known) {
                    (_, Some(PayoutStatus::Failed))
                    | (PayoutOutcome::Paid, Some(PayoutStatus::Paid)) => return Ok(Vec::new()),
                    (PayoutOutcome::Paid, None) => ProviderEvent::PayoutPaid {
                        provider_id,
                        account_ref: account_ref.clone(),
                        payout_ref: payout_ref.clone(),
                        amount: *amount,
                    },
                    (PayoutOutcome::Failed { reason }, _) => ProviderEvent::PayoutFailed {
                        provider_id,
                        account_ref: account_ref.clone(),
                        payout_ref: payout_ref.clone(),
                        amount: *amount,
                        reason: reason.clone(),
                    },
                }
            }
            ProviderCommand::Accrue {
                provider_id,
                payment_id,
                month,
                currency,
                commission_minor,
            } => {
                let mut month = month.clone();
                while known.is_some_and(|p| p.invoiced.contains_key(&month)) {
                    month = next_month(&month).ok_or(ProviderError::NotAMonth(month))?;
                }
                ProviderEvent::CommissionAccrued {
                    provider_id: *provider_id,
                    payment_id: *payment_id,
                    month,
                    currency: *currency,
                    commission_minor: *commission_minor,
                }
            }
            ProviderCommand::Invoice { month, number } => {
                let p = known.ok_or_else(|| ProviderError::NothingToInvoice(month.clone()))?;
                if let Some(n) = p.invoiced.get(month) {
                    return Err(ProviderError::AlreadyInvoiced(*n));
                }
                let lines: Vec<InvoiceLine> = p
                    .accrued
                    .get(month)
                    .into_iter()
                    .flatten()
                    .map(|(currency, a)| InvoiceLine {
                        currency: *currency,
                        commission_minor: a.commission_minor,
                        entries: a.entries,
                    })
                    .collect();
                if lines.is_empty() {
                    return Err(ProviderError::NothingToInvoice(month.clone()));
                }
                ProviderEvent::CommissionInvoiced {
                    provider_id: p.id,
                    number: *number,
                    month: month.clone(),
                    lines,
                }
            }
            ProviderCommand::AddDoorStaff {
                provider_id,
                user_id,
            } => {
                if provider_id == user_id {
                    return Err(ProviderError::StaffIsProvider);
                }
                let staff = known.map(|p| &p.door_staff);
                if staff.is_some_and(|s| s.contains(user_id)) {
                    return Ok(Vec::new());
                }
                if staff.is_some_and(|s| s.len() >= DOOR_STAFF_MAX) {
                    return Err(ProviderError::TooManyStaff);
                }
                ProviderEvent::DoorStaffAdded {
                    provider_id: *provider_id,
                    user_id: *user_id,
                }
            }
            ProviderCommand::RemoveDoorStaff {
                provider_id,
                user_id,
            } => {
                if !known.is_some_and(|p| p.door_staff.contains(user_id)) {
                    return Ok(Vec::new());
                }
                ProviderEvent::DoorStaffRemoved {
                    provider_id: *provider_id,
                    user_id: *user_id,
                }
            }
            ProviderCommand::AwaitAccount {
                provider_id,
                payment_id,
            } => {
                if known.is_some_and(|p| p.waiting.contains(payment_id)) {
                    return Ok(Vec::new());
                }
                ProviderEvent::TransferAwaitingAccount {
                    provider_id: *provider_id,
                    payment_id: *payment_id,
                }
            }
        }])
    }

    fn evolve(state: ProviderState, event: &ProviderEvent) -> ProviderState {
        let id = match event {
            ProviderEvent::DoorStaffAdded { provider_id, .. }
            | ProviderEvent::DoorStaffRemoved { provider_id, .. }
            | ProviderEvent::PayoutAccountOpened { provider_id, .. }
            | ProviderEvent::PayoutAccountActivated { provider_id, .. }
            | ProviderEvent::PayoutAccountRestricted { provider_id, .. }
            | ProviderEvent::CommissionRateSet { provider_id, .. }
            | ProviderEvent::TransferAwaitingAccount { provider_id, .. }
            | ProviderEvent::PayoutPaid { provider_id, .. }
            | ProviderEvent::PayoutFailed { provider_id, .. }
            | ProviderEvent::CommissionAccrued { provider_id, .. }
            | ProviderEvent::CommissionInvoiced { provider_id, .. } => *provider_id,
        };
        let mut p = match state {
            ProviderState::New => Provider {
                id,
                commission_bp: DEFAULT_COMMISSION_BP,
                account: None,
                waiting: BTreeSet::new(),
                payouts: BTreeMap::new(),
                accrued: BTreeMap::new(),
                invoiced: BTreeMap::new(),
                door_staff: BTreeSet::new(),
            },
            ProviderState::Known(p) => p,
        };
        match event {
            ProviderEvent::PayoutAccountOpened {
                gateway,
                account_ref,
                ..
            } => {
                p.account = Some(PayoutAccount {
                    gateway: gateway.clone(),
                    account_ref: account_ref.clone(),
                    status: AccountStatus::Onboarding,
                    restriction: None,
                });
            }
            ProviderEvent::PayoutAccountActivated { .. } => {
                if let Some(a) = p.account.as_mut() {
                    a.status = AccountStatus::Active;
                    a.restriction = None;
                }
            }
            ProviderEvent::PayoutAccountRestricted { reason, .. } => {
                if let Some(a) = p.account.as_mut() {
                    a.status = AccountStatus::Restricted;
                    a.restriction = Some(reason.clone());
                }
            }
            ProviderEvent::CommissionRateSet { commission_bp, .. } => {
                p.commission_bp = *commission_bp;
            }
            ProviderEvent::TransferAwaitingAccount { payment_id, .. } => {
                p.waiting.insert(*payment_id);
            }
            ProviderEvent::PayoutPaid { payout_ref, .. } => {
                p.payouts.insert(payout_ref.clone(), PayoutStatus::Paid);
            }
            ProviderEvent::PayoutFailed { payout_ref, .. } => {
                p.payouts.insert(payout_ref.clone(), PayoutStatus::Failed);
            }
            ProviderEvent::CommissionAccrued {
                month,
                currency,
                commission_minor,
                ..
            } => {
                let a = p
                    .accrued
                    .entry(month.clone())
                    .or_default()
                    .entry(*currency)
                    .or_default();
                a.commission_minor += commission_minor;
                a.entries += 1;
            }
            ProviderEvent::CommissionInvoiced { number, month, .. } => {
                p.accrued.remove(month);
                p.invoiced.insert(month.clone(), *number);
            }
            ProviderEvent::DoorStaffAdded { user_id, .. } => {
                p.door_staff.insert(*user_id);
            }
            ProviderEvent::DoorStaffRemoved { user_id, .. } => {
                p.door_staff.remove(user_id);
            }
        }
        ProviderState::Known(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::spec::given;

    fn provider() -> UserId {
        UserId(uuid::Uuid::from_u128(7))
    }

    fn opened() -> ProviderEvent {
        ProviderEvent::PayoutAccountOpened {
            provider_id: provider(),
            gateway: "stripe".into(),
            account_ref: "acct_1".into(),
        }
    }

    #[test]
    fn an_account_opens_once_and_follows_the_gateway() {
        given::<ProviderAggregate>(&[opened()]).when_err(
            ProviderCommand::StartOnboarding {
                provider_id: provider(),
                gateway: "stripe".into(),
                account_ref: "acct_2".into(),
            },
            ProviderError::AccountExists,
        );
        let active = given::<ProviderAggregate>(&[opened()]).when_then(
            ProviderCommand::Activate {
                account_ref: "acct_1".into(),
            },
            &[ProviderEvent::PayoutAccountActivated {
                provider_id: provider(),
                account_ref: "acct_1".into(),
            }],
        );
        assert!(active.can_receive_transfers());
        given::<ProviderAggregate>(&[opened()]).when_err(
            ProviderCommand::Activate {
                account_ref: "acct_9".into(),
            },
            ProviderError::WrongAccount {
                expected: "acct_1".into(),
                got: "acct_9".into(),
            },
        );
        given::<ProviderAggregate>(&[]).when_err(
            ProviderCommand::Restrict {
                account_ref: "acct_1".into(),
                reason: "x".into(),
            },
            ProviderError::NoAccount,
        );
    }

    #[test]
    fn payout_reports_in_any_order_and_twice_end_where_the_bank_did() {
        let eur = |minor| Money {
            minor,
            currency: crate::values::Currency::EUR,
        };
        let report = |outcome| ProviderCommand::RecordPayout {
            account_ref: "acct_1".into(),
            payout_ref: "po_1".into(),
            amount: eur(8_500),
            outcome,
        };
        let failed = PayoutOutcome::Failed {
            reason: "account_closed".into(),
        };
        let paid_event = ProviderEvent::PayoutPaid {
            provider_id: provider(),
            account_ref: "acct_1".into(),
            payout_ref: "po_1".into(),
            amount: eur(8_500),
        };
        let failed_event = ProviderEvent::PayoutFailed {
            provider_id: provider(),
            account_ref: "acct_1".into(),
            payout_ref: "po_1".into(),
            amount: eur(8_500),
            reason: "account_closed".into(),
        };
        // Paid, then paid again: once.
        given::<ProviderAggregate>(&[opened()]).when_then(
            report(PayoutOutcome::Paid),
            std::slice::from_ref(&paid_event),
        );
        given::<ProviderAggregate>(&[opened(), paid_event.clone()])
            .when_then(report(PayoutOutcome::Paid), &[]);
        // Paid, then returned by the bank: failed.
        let state = given::<ProviderAggregate>(&[opened(), paid_event.clone()])
            .when_then(report(failed.clone()), std::slice::from_ref(&failed_event));
        assert_eq!(
            state.provider().expect("known").payouts["po_1"],
            PayoutStatus::Failed
        );
        // Failed first, the late "paid" changes nothing; a second "failed" neither.
        given::<ProviderAggregate>(&[opened(), failed_event.clone()])
            .when_then(report(PayoutOutcome::Paid), &[]);
        given::<ProviderAggregate>(&[opened(), failed_event]).when_then(report(failed), &[]);
    }

    #[test]
    fn commission_accrues_per_month_and_a_month_is_invoiced_once() {
        let accrue = |month: &str, minor| ProviderCommand::Accrue {
            provider_id: provider(),
            payment_id: PaymentId(uuid::Uuid::from_u128(minor as u128)),
            month: month.into(),
            currency: Currency::EUR,
            commission_minor: minor,
        };
        let accrued = |month: &str, minor| ProviderEvent::CommissionAccrued {
            provider_id: provider(),
            payment_id: PaymentId(uuid::Uuid::from_u128(minor as u128)),
            month: month.into(),
            currency: Currency::EUR,
            commission_minor: minor,
        };
        let number: DocumentNumber = "INV-2026-000001".parse().expect("number");
        let history = [accrued("2026-11", 1_500), accrued("2026-11", -600)];
        let state = given::<ProviderAggregate>(&history).when_then(
            ProviderCommand::Invoice {
                month: "2026-11".into(),
                number,
            },
            &[ProviderEvent::CommissionInvoiced {
                provider_id: provider(),
                number,
                month: "2026-11".into(),
                lines: vec![InvoiceLine {
                    currency: Currency::EUR,
                    commission_minor: 900,
                    entries: 2,
                }],
            }],
        );
        assert!(state.provider().expect("known").accrued.is_empty());
        let invoiced = [
            history[0].clone(),
            history[1].clone(),
            ProviderEvent::CommissionInvoiced {
                provider_id: provider(),
                number,
                month: "2026-11".into(),
                lines: vec![],
            },
        ];
        given::<ProviderAggregate>(&invoiced).when_err(
            ProviderCommand::Invoice {
                month: "2026-11".into(),
                number,
            },
            ProviderError::AlreadyInvoiced(number),
        );
        // A late accrual for a closed month goes to the next one.
        given::<ProviderAggregate>(&invoiced)
            .when_then(accrue("2026-11", 250), &[accrued("2026-12", 250)]);
        given::<ProviderAggregate>(&[]).when_err(
            ProviderCommand::Invoice {
                month: "2026-10".into(),
                number,
            },
            ProviderError::NothingToInvoice("2026-10".into()),
        );
        assert_eq!(next_month("2026-12").as_deref(), Some("2027-01"));
        assert_eq!(next_month("2026-13"), None);
    }

    #[test]
    fn the_commission_defaults_to_fifteen_percent_and_is_bounded() {
        assert_eq!(ProviderState::New.commission_bp(), 1500);
        given::<ProviderAggregate>(&[]).when_err(
            ProviderCommand::SetCommission {
                provider_id: provider(),
                commission_bp: 5001,
                reason: "typo".into(),
            },
            ProviderError::CommissionOutOfRange,
        );
        let state = given::<ProviderAggregate>(&[]).when_then(
            ProviderCommand::SetCommission {
                provider_id: provider(),
                commission_bp: 1000,
                reason: "partner deal".into(),
            },
            &[ProviderEvent::CommissionRateSet {
                provider_id: provider(),
                commission_bp: 1000,
                reason: "partner deal".into(),
            }],
        );
        assert_eq!(state.commission_bp(), 1000);
    }
}
