//! Tiered cancellation policies: how much of what was paid comes back, by how long before the
//! start a booking is cancelled. A listing carries one; a booking snapshots it when placed, so
//! later changes to the listing never change what an existing customer was promised.

use serde::{Deserialize, Serialize};

use crate::values::Money;

/// One tier: cancelling at least `min_hours_before` the start refunds `refund_percent` %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundTier {
    pub min_hours_before: u32,
    pub refund_percent: u8,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("a policy needs at least one tier")]
    Empty,
    #[error("refund percentages must be between 0 and 100")]
    Percent,
    #[error(
        "tiers must be ordered from the earliest cancellation (most hours) to the latest, without repeats"
    )]
    Order,
    #[error("a later cancellation cannot refund more than an earlier one")]
    NotMonotonic,
}

/// Tiers ordered by `min_hours_before`, descending; a cancellation later than every tier
/// refunds nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<RefundTier>", into = "Vec<RefundTier>")]
pub struct CancellationPolicy(Vec<RefundTier>);

impl CancellationPolicy {
    pub fn new(tiers: Vec<RefundTier>) -> Result<Self, PolicyError> {
        if tiers.is_empty() {
            return Err(PolicyError::Empty);
        }
        if tiers.iter().any(|t| t.refund_percent > 100) {
            return Err(PolicyError::Percent);
        }
        for pair in tiers.windows(2) {
            if pair[0].min_hours_before <= pair[1].min_hours_before {
                return Err(PolicyError::Order);
            }
            if pair[0].refund_percent < pair[1].refund_percent {
                return Err(PolicyError::NotMonotonic);
            }
        }
        Ok(Self(tiers))
    }

    /// The platform default: ≥ 7 days 100 %, ≥ 48 h 50 %, later 0 %.
    pub fn standard() -> Self {
        Self(vec![
            RefundTier {
                min_hours_before: 168,
                refund_percent: 100,
            },
            RefundTier {
                min_hours_before: 48,
                refund_percent: 50,
            },
        ])
    }

    pub fn tiers(&self) -> &[RefundTier] {
        &self.0
    }

    /// Percentage refunded when cancelling `hours_before` the start (negative: after it).
    pub fn refund_percent(&self, hours_before: i64) -> u8 {
        self.0
            .iter()
            .find(|t| hours_before >= i64::from(t.min_hours_before))
            .map_or(0, |t| t.refund_percent)
    }

    /// The latest notice (hours before the start) at which a cancellation still refunds
    /// something; `None` when nothing is ever refunded. A booking can be moved to another date
    /// up to this point: once it is not refundable, it is not movable either.
    pub fn last_refundable_notice(&self) -> Option<u32> {
        self.0
            .iter()
            .rev()
            .find(|t| t.refund_percent > 0)
            .map(|t| t.min_hours_before)
    }

    /// What comes back of `paid` when cancelling `hours_before` the start.
    pub fn refund_for(&self, paid: Money, hours_before: i64) -> Money {
        paid.percent(self.refund_percent(hours_before))
    }
}

impl Default for CancellationPolicy {
    fn default() -> Self {
        Self::standard()
    }
}

impl TryFrom<Vec<RefundTier>> for CancellationPolicy {
    type Error = PolicyError;
    fn try_from(value: Vec<RefundTier>) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<CancellationPolicy> for Vec<RefundTier> {
    fn from(value: CancellationPolicy) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Currency;

    fn tier(h: u32, p: u8) -> RefundTier {
        RefundTier {
            min_hours_before: h,
            refund_percent: p,
        }
    }

    #[test]
    fn standard_tiers_refund_by_notice() {
        let p = CancellationPolicy::standard();
        let paid = Money::new(10_000, Currency::EUR).expect("money");
        assert_eq!(p.refund_for(paid, 24 * 30).minor, 10_000);
        assert_eq!(
            p.refund_for(paid, 168).minor,
            10_000,
            "exactly 7 days is the first tier"
        );
        assert_eq!(p.refund_for(paid, 167).minor, 5_000);
        assert_eq!(p.refund_for(paid, 48).minor, 5_000);
        assert_eq!(p.refund_for(paid, 47).minor, 0);
        assert_eq!(p.refund_for(paid, -5).minor, 0, "after the start");
    }

    #[test]
    fn malformed_policies_are_refused() {
        assert_eq!(CancellationPolicy::new(vec![]), Err(PolicyError::Empty));
        assert_eq!(
            CancellationPolicy::new(vec![tier(10, 101)]),
            Err(PolicyError::Percent)
        );
        assert_eq!(
            CancellationPolicy::new(vec![tier(10, 50), tier(20, 40)]),
            Err(PolicyError::Order)
        );
        assert_eq!(
            CancellationPolicy::new(vec![tier(20, 40), tier(10, 50)]),
            Err(PolicyError::NotMonotonic)
        );
        assert!(
            serde_json::from_str::<CancellationPolicy>(
                r#"[{"min_hours_before":1,"refund_percent":200}]"#
            )
            .is_err()
        );
    }
}
