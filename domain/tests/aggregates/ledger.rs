//! The ledger under generated money histories: payments, refunds before and after the release,
//! releases, transfers that succeed or fail, and reversals, in random order over several
//! payments and two providers. Every posting balances, no payable goes negative, and once every
//! transfer due has gone out, each provider was transferred exactly its share.

use proptest::prelude::*;
use tessera_domain::Aggregate;
use tessera_domain::ledger::{Account, Books};
use tessera_domain::payment::{PaymentAggregate, PaymentCommand, PaymentEvent, PaymentState};
use tessera_domain::values::{BookingId, Currency, PaymentId, UserId};
use uuid::Uuid;

use crate::fixtures::*;

#[derive(Debug, Clone)]
enum Op {
    Succeed(usize),
    RequestRefund(usize, i64),
    RefundOutcome(usize, bool),
    Release(usize),
    Transfer(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..4).prop_map(Op::Succeed),
        (0usize..4, 1i64..6_000).prop_map(|(p, a)| Op::RequestRefund(p, a)),
        (0usize..4, any::<bool>()).prop_map(|(p, ok)| Op::RefundOutcome(p, ok)),
        (0usize..4).prop_map(Op::Release),
        (0usize..4, any::<bool>()).prop_map(|(p, ok)| Op::Transfer(p, ok)),
    ]
}

struct World {
    states: Vec<PaymentState>,
    books: Books,
    next: u128,
}

impl World {
    fn provider(i: usize) -> UserId {
        UserId(Uuid::from_u128(100 + (i % 2) as u128))
    }

    fn id(&mut self) -> Uuid {
        self.next += 1;
        Uuid::from_u128(self.next)
    }

    /// Decides `command` on payment `i`; applies what it decided. Refusals change nothing.
    fn run(&mut self, i: usize, command: PaymentCommand) -> Vec<PaymentEvent> {
        let Ok(events) = PaymentAggregate::decide(&self.states[i], &command) else {
            return Vec::new();
        };
        for e in &events {
            self.states[i] = PaymentAggregate::evolve(self.states[i].clone(), e);
            self.books.apply(e);
        }
        events
    }

    fn payment(&self, i: usize) -> &tessera_domain::payment::Payment {
        self.states[i].payment().expect("created")
    }

    /// What the payments reactor does before a refund goes out: the provider gives back what
    /// it no longer earns.
    fn reverse_what_is_due(&mut self, i: usize) {
        while self.payment(i).reversal_due() > 0 {
            let reversal_id = self.id();
            self.run(i, PaymentCommand::StartReversal { reversal_id });
            let done = self.run(
                i,
                PaymentCommand::CompleteReversal {
                    reversal_id,
                    reversal_ref: format!("trr_{reversal_id}"),
                },
            );
            assert!(!done.is_empty(), "a started reversal completes");
        }
    }

    fn transfer(&mut self, i: usize, ok: bool) {
        let transfer_id = self.id();
        if self
            .run(i, PaymentCommand::StartTransfer { transfer_id })
            .is_empty()
        {
            return;
        }
        let command = if ok {
            PaymentCommand::CompleteTransfer {
                transfer_id,
                transfer_ref: format!("tr_{transfer_id}"),
            }
        } else {
            PaymentCommand::FailTransfer {
                transfer_id,
                reason: "account restricted".into(),
            }
        };
        assert!(!self.run(i, command).is_empty());
    }
}

proptest! {
    #[test]
    fn every_history_keeps_the_books_balanced_and_pays_providers_their_share(
        ops in proptest::collection::vec(op(), 1..120),
        commissions in proptest::collection::vec(0u32..5_000, 4),
    ) {
        let mut w = World { states: vec![PaymentState::New; 4], books: Books::default(), next: 1_000 };
        for i in 0..4 {
            w.run(i, PaymentCommand::CreateIntent {
                id: PaymentId(Uuid::from_u128(10 + i as u128)),
                booking_id: BookingId(Uuid::from_u128(20 + i as u128)),
                customer_id: CUSTOMER,
                amount: eur(5_000 + 1_234 * i as i64),
                provider: "simulated".into(),
                provider_ref: format!("sim_{i}"),
            });
        }
        for op in ops {
            match op {
                Op::Succeed(i) => { w.run(i, PaymentCommand::MarkSucceeded); }
                Op::RequestRefund(i, amount) => {
                    let refund_id = w.id();
                    w.run(i, PaymentCommand::RequestRefund { refund_id, amount: eur(amount) });
                }
                Op::RefundOutcome(i, ok) => {
                    let Some(r) = w.states[i].payment().and_then(|p| {
                        p.refunds.iter().find(|r| r.status == tessera_domain::payment::RefundStatus::Requested).cloned()
                    }) else { continue };
                    if ok {
                        w.reverse_what_is_due(i);
                        w.run(i, PaymentCommand::RefundSucceeded { refund_id: r.refund_id });
                    } else {
                        w.run(i, PaymentCommand::RefundFailed { refund_id: r.refund_id, reason: "declined".into() });
                    }
                }
                Op::Release(i) => {
                    w.run(i, PaymentCommand::Release { provider_id: World::provider(i), commission_bp: commissions[i] });
                }
                Op::Transfer(i, ok) => w.transfer(i, ok),
            }
            prop_assert_eq!(w.books.violations(), vec![]);
        }
        // Settle: every refund under way finishes, then every transfer due goes out.
        for i in 0..4 {
            while let Some(r) = w.states[i].payment().and_then(|p| {
                p.refunds.iter().find(|r| r.status == tessera_domain::payment::RefundStatus::Requested).cloned()
            }) {
                w.reverse_what_is_due(i);
                w.run(i, PaymentCommand::RefundSucceeded { refund_id: r.refund_id });
            }
            w.transfer(i, true);
            prop_assert_eq!(w.books.violations(), vec![]);
        }
        for i in 0..4 {
            let p = w.payment(i).clone();
            prop_assert_eq!(p.transfer_due(), 0);
            prop_assert_eq!(p.reversal_due(), 0);
            prop_assert_eq!(w.books.balance(Currency::EUR, Account::ProviderPayable(World::provider(i))), 0);
        }
        for provider in [World::provider(0), World::provider(1)] {
            let share: i64 = (0..4)
                .filter(|i| World::provider(*i) == provider)
                .filter_map(|i| {
                    let p = w.payment(i);
                    p.escrow.as_ref().map(|e| tessera_domain::payment::share_of(p.amount.minor - p.refunded(), e.commission_bp))
                })
                .sum();
            let transferred = w.books.transferred_to(provider).get(&Currency::EUR).copied().unwrap_or(0);
            prop_assert_eq!(transferred, share);
        }
        // Money is conserved at the gateway: in, minus refunds, minus net transfers.
        let gateway: i64 = (0..4)
            .filter_map(|i| w.states[i].payment())
            .filter(|p| p.status == tessera_domain::payment::PaymentStatus::Succeeded)
            .map(|p| p.amount.minor - p.refunded() - p.transferred())
            .sum();
        prop_assert_eq!(w.books.balance(Currency::EUR, Account::Gateway), gateway);
    }
}
