//! The double-entry ledger: every money event of a payment posts entries that sum to zero, to
//! named accounts, in the payment's currency. Debits are positive, credits negative.
//!
//! | event | debit | credit |
//! |---|---|---|
//! | `PaymentSucceeded` (A) | `gateway` A | `customer_funds` A |
//! | `RefundSucceeded` before the release (r) | `customer_funds` r | `gateway` r |
//! | `FundsReleased` (S + C) | `customer_funds` S + C | `provider_payable:<p>` S, `commission_revenue` C |
//! | `RefundSucceeded` after the release (r = x + c) | `provider_payable:<p>` x, `commission_revenue` c | `gateway` r |
//! | `FundsTransferred` (T) | `provider_payable:<p>` T | `gateway` T |
//! | `TransferReversed` (V) | `gateway` V | `provider_payable:<p>` V |
//!
//! `gateway` is the platform's balance at the payment gateway; `customer_funds` what customers
//! paid that is held until the provider's share is released; `provider_payable:<p>` what the
//! platform owes provider `p` and has not transferred. Every event carries what its posting
//! needs, so postings are a pure function of one event ([`posting`]) and [`Books`] checks the
//! invariants as it goes: a posting balances, `customer_funds` and every `provider_payable` never
//! go negative (as credit balances), and what a provider was transferred plus what it is owed
//! equals its share of what it delivered and was not refunded.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::payment::{PaymentEvent, share_of};
use crate::values::{BookingId, Currency, PaymentId, UserId};

/// A ledger account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "account", content = "provider_id", rename_all = "snake_case")]
pub enum Account {
    Gateway,
    CustomerFunds,
    CommissionRevenue,
    ProviderPayable(UserId),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gateway => f.write_str("gateway"),
            Self::CustomerFunds => f.write_str("customer_funds"),
            Self::CommissionRevenue => f.write_str("commission_revenue"),
            Self::ProviderPayable(p) => write!(f, "provider_payable:{p}"),
        }
    }
}

impl Account {
    /// The account named as [`fmt::Display`] writes it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "gateway" => Some(Self::Gateway),
            "customer_funds" => Some(Self::CustomerFunds),
            "commission_revenue" => Some(Self::CommissionRevenue),
            other => other
                .strip_prefix("provider_payable:")
                .and_then(|id| uuid::Uuid::parse_str(id).ok())
                .map(|id| Self::ProviderPayable(UserId(id))),
        }
    }
}

/// What a posting records, for statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Payment,
    Refund,
    Release,
    Transfer,
    Reversal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
            Self::Release => "release",
            Self::Transfer => "transfer",
            Self::Reversal => "reversal",
        }
    }
}

/// Balanced entries of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Posting {
    pub kind: Kind,
    /// The provider whose share the posting moves (releases, transfers, reversals, refunds
    /// after the release), for statements.
    pub provider_id: Option<UserId>,
    pub payment_id: PaymentId,
    pub booking_id: BookingId,
    pub currency: Currency,
    pub entries: Vec<(Account, i64)>,
}

impl Posting {
    pub fn balances(&self) -> bool {
        self.entries
            .iter()
            .map(|(_, m)| i128::from(*m))
            .sum::<i128>()
            == 0
    }
}

/// The posting of a payment event, if it moves money.
pub fn posting(event: &PaymentEvent) -> Option<Posting> {
    use Account::{CommissionRevenue, CustomerFunds, Gateway, ProviderPayable};
    let (kind, payment_id, booking_id, currency, entries) = match event {
        PaymentEvent::PaymentSucceeded {
            payment_id,
            booking_id,
            amount,
        } => (
            Kind::Payment,
            payment_id,
            booking_id,
            amount.currency,
            vec![(Gateway, amount.minor), (CustomerFunds, -amount.minor)],
        ),
        PaymentEvent::RefundSucceeded {
            payment_id,
            booking_id,
            amount,
            split,
            ..
        } => (
            Kind::Refund,
            payment_id,
            booking_id,
            amount.currency,
            match split {
                None => vec![(CustomerFunds, amount.minor), (Gateway, -amount.minor)],
                Some(s) => vec![
                    (ProviderPayable(s.provider_id), s.provider_part),
                    (CommissionRevenue, s.commission_part),
                    (Gateway, -amount.minor),
                ],
            },
        ),
        PaymentEvent::FundsReleased {
            payment_id,
            booking_id,
            provider_id,
            released,
            provider_share,
            commission,
            ..
        } => (
            Kind::Release,
            payment_id,
            booking_id,
            released.currency,
            vec![
                (CustomerFunds, released.minor),
                (ProviderPayable(*provider_id), -provider_share.minor),
                (CommissionRevenue, -commission.minor),
            ],
        ),
        PaymentEvent::FundsTransferred {
            payment_id,
            booking_id,
            provider_id,
            amount,
            ..
        } => (
            Kind::Transfer,
            payment_id,
            booking_id,
            amount.currency,
            vec![
                (ProviderPayable(*provider_id), amount.minor),
                (Gateway, -amount.minor),
            ],
        ),
        PaymentEvent::TransferReversed {
            payment_id,
            booking_id,
            provider_id,
            amount,
            ..
        } => (
            Kind::Reversal,
            payment_id,
            booking_id,
            amount.currency,
            vec![
                (Gateway, amount.minor),
                (ProviderPayable(*provider_id), -amount.minor),
            ],
        ),
        _ => return None,
    };
    let provider_id = match event {
        PaymentEvent::FundsReleased { provider_id, .. }
        | PaymentEvent::FundsTransferred { provider_id, .. }
        | PaymentEvent::TransferReversed { provider_id, .. } => Some(*provider_id),
        PaymentEvent::RefundSucceeded { split: Some(s), .. } => Some(s.provider_id),
        _ => None,
    };
    Some(Posting {
        kind,
        provider_id,
        payment_id: *payment_id,
        booking_id: *booking_id,
        currency,
        entries: entries.into_iter().filter(|(_, m)| *m != 0).collect(),
    })
}

/// A broken ledger invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub payment_id: Option<PaymentId>,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.payment_id {
            Some(p) => write!(f, "payment {p}: {}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

/// Per released payment: what the provider's share is computed from.
#[derive(Debug, Clone, Default)]
struct Released {
    provider_id: Option<UserId>,
    currency: Option<Currency>,
    commission_bp: u32,
    /// Paid and not refunded, counting from the release.
    remaining: i64,
    transferred: i64,
}

/// The ledger's balances, built posting by posting, with its invariants checked on the way.
#[derive(Debug, Clone, Default)]
pub struct Books {
    balances: BTreeMap<(Currency, Account), i64>,
    released: BTreeMap<PaymentId, Released>,
    violations: Vec<Violation>,
    postings: u64,
}

impl Books {
    /// Applies one payment event; returns its posting, if any.
    pub fn apply(&mut self, event: &PaymentEvent) -> Option<Posting> {
        let posting = posting(event)?;
        self.postings += 1;
        let broken = |what: String| Violation {
            payment_id: Some(posting.payment_id),
            what,
        };
        if !posting.balances() {
            self.violations.push(broken(format!(
                "{} posting does not balance: {:?}",
                posting.kind.as_str(),
                posting.entries
            )));
        }
        for (account, minor) in &posting.entries {
            *self
                .balances
                .entry((posting.currency, *account))
                .or_default() += minor;
        }
        for (account, _) in &posting.entries {
            if matches!(
                account,
                Account::CustomerFunds | Account::ProviderPayable(_)
            ) && self.balance(posting.currency, *account) > 0
            {
                self.violations.push(broken(format!(
                    "{account} went negative ({} {}) after a {}",
                    -self.balance(posting.currency, *account),
                    posting.currency.as_str(),
                    posting.kind.as_str()
                )));
            }
        }
        let r = self.released.entry(posting.payment_id).or_default();
        match event {
            PaymentEvent::FundsReleased {
                provider_id,
                commission_bp,
                released,
                ..
            } => {
                r.provider_id = Some(*provider_id);
                r.currency = Some(released.currency);
                r.commission_bp = *commission_bp;
                r.remaining = released.minor;
            }
            PaymentEvent::RefundSucceeded {
                amount,
                split: Some(_),
                ..
            } => r.remaining -= amount.minor,
            PaymentEvent::FundsTransferred { amount, .. } => r.transferred += amount.minor,
            PaymentEvent::TransferReversed { amount, .. } => r.transferred -= amount.minor,
            _ => {}
        }
        Some(posting)
    }

    /// The balance of `account` (debits minus credits).
    pub fn balance(&self, currency: Currency, account: Account) -> i64 {
        self.balances
            .get(&(currency, account))
            .copied()
            .unwrap_or(0)
    }

    /// Every non-zero balance.
    pub fn balances(&self) -> impl Iterator<Item = (Currency, Account, i64)> + '_ {
        self.balances
            .iter()
            .filter(|(_, m)| **m != 0)
            .map(|((c, a), m)| (*c, *a, *m))
    }

    pub fn postings(&self) -> u64 {
        self.postings
    }

    /// What the provider was transferred, net of reversals, per currency.
    pub fn transferred_to(&self, provider: UserId) -> BTreeMap<Currency, i64> {
        let mut out = BTreeMap::new();
        for r in self.released.values() {
            if let (Some(p), Some(c)) = (r.provider_id, r.currency)
                && p == provider
            {
                *out.entry(c).or_default() += r.transferred;
            }
        }
        out
    }

    /// Every invariant broken so far, plus the end-state ones: the whole ledger balances per
    /// currency, and per provider the transferred amount plus what is still payable equals the
    /// share of what was released and not refunded since.
    pub fn violations(&self) -> Vec<Violation> {
        let mut out = self.violations.clone();
        let mut totals: BTreeMap<Currency, i128> = BTreeMap::new();
        for ((c, _), m) in &self.balances {
            *totals.entry(*c).or_default() += i128::from(*m);
        }
        for (c, total) in totals {
            if total != 0 {
                out.push(Violation {
                    payment_id: None,
                    what: format!("the ledger is off by {total} in {}", c.as_str()),
                });
            }
        }
        let mut entitled: BTreeMap<(Currency, UserId), (i64, i64)> = BTreeMap::new();
        for r in self.released.values() {
            if let (Some(p), Some(c)) = (r.provider_id, r.currency) {
                let e = entitled.entry((c, p)).or_default();
                e.0 += share_of(r.remaining, r.commission_bp);
                e.1 += r.transferred;
            }
        }
        for ((c, p), (share, transferred)) in entitled {
            let payable = -self.balance(c, Account::ProviderPayable(p));
            if transferred + payable != share {
                out.push(Violation {
                    payment_id: None,
                    what: format!(
                        "provider {p}: transferred {transferred} + payable {payable} != share {share} of delivered, unrefunded bookings ({})",
                        c.as_str()
                    ),
                });
            }
        }
        out
    }
}
