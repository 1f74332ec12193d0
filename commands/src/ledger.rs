//! `ledger check`: the ledger recomputed from the log (every payment event posted through
//! [`tessera_domain::ledger::Books`], its invariants checked on the way), then reconciled with
//! the gateway's own records: every charge, refund, transfer and reversal the log recorded must
//! be at the gateway with the same amount, and every one the gateway has must be on the log;
//! so must every payout of a connected account, paid or failed. It also checks the document
//! series (receipts, credit notes): dense, unique, each number stated by its document.

use std::collections::BTreeMap;

use serde::Serialize;
use tessera_domain::ledger::Books;
use tessera_domain::payment::PaymentEvent;
use tessera_log::codec::{self, AnyEvent};
use tessera_log::store::{EventStore, Position};

use crate::error::CommandError;
use crate::gateway::{GatewayBook, PaymentGateway};

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerReport {
    /// Money events posted.
    pub postings: u64,
    /// The log position the check read up to.
    pub position: u64,
    /// Every non-zero account balance (debits positive, credits negative).
    pub balances: Vec<Balance>,
    /// Broken ledger invariants.
    pub violations: Vec<String>,
    /// Where the log and the gateway disagree.
    pub differences: Vec<String>,
    /// The gateway reconciled with (`stripe`, `simulated`).
    pub gateway: String,
    /// The document series and what is wrong with them.
    pub documents: crate::receipts::SeriesReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct Balance {
    pub account: String,
    pub currency: String,
    pub amount_minor: i64,
}

impl LedgerReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
            && self.differences.is_empty()
            && self.documents.findings.is_empty()
    }
}

/// What the log says the gateway should hold.
#[derive(Debug, Default)]
struct Expected {
    /// Only payments through this gateway are at this gateway.
    gateway: String,
    /// Payment id → (gateway name, provider ref).
    intents: BTreeMap<uuid::Uuid, (String, String)>,
    /// Transfer id → the gateway's transfer id.
    transfer_refs: BTreeMap<uuid::Uuid, String>,
    /// Connected account → the gateway it was opened at.
    accounts: BTreeMap<String, String>,
    book: GatewayBook,
}

/// Recomputes the ledger from the whole log and reconciles it with `gateway`.
pub async fn check(
    store: &dyn EventStore,
    gateway: &dyn PaymentGateway,
) -> Result<LedgerReport, CommandError> {
    let mut books = Books::default();
    let mut expected = Expected {
        gateway: gateway.name().to_owned(),
        ..Expected::default()
    };
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            if !matches!(
                codec::category_of(&e.event_type),
                Some("payment" | "provider")
            ) {
                continue;
            }
            match codec::decode_any(&e.event_type, e.schema_version, &e.data)
                .map_err(|err| CommandError::Codec(err.to_string()))?
            {
                AnyEvent::Payment(p) => {
                    books.apply(&p);
                    expect(&mut expected, &p);
                }
                AnyEvent::Provider(p) => expect_payout(&mut expected, &p),
                _ => {}
            }
        }
    }
    let mut report = LedgerReport {
        postings: books.postings(),
        position: after.0,
        gateway: gateway.name().to_owned(),
        ..LedgerReport::default()
    };
    report.balances = books
        .balances()
        .map(|(currency, account, amount_minor)| Balance {
            account: account.to_string(),
            currency: currency.to_string(),
            amount_minor,
        })
        .collect();
    report.violations = books.violations().iter().map(ToString::to_string).collect();
    let actual = gateway.book().await?;
    report.differences = differences(&expected.book, &actual);
    report.documents = crate::receipts::verify(store).await?;
    Ok(report)
}

fn expect_payout(expected: &mut Expected, event: &tessera_domain::provider::ProviderEvent) {
    use tessera_domain::provider::ProviderEvent as E;
    let (account_ref, payout_ref, amount, paid) = match event {
        E::PayoutAccountOpened {
            gateway,
            account_ref,
            ..
        } => {
            expected
                .accounts
                .insert(account_ref.clone(), gateway.clone());
            return;
        }
        E::PayoutPaid {
            account_ref,
            payout_ref,
            amount,
            ..
        } => (account_ref, payout_ref, amount, true),
        E::PayoutFailed {
            account_ref,
            payout_ref,
            amount,
            ..
        } => (account_ref, payout_ref, amount, false),
        _ => return,
    };
    if expected.accounts.get(account_ref) == Some(&expected.gateway) {
        expected.book.payouts.insert(
            payout_ref.clone(),
            (account_ref.clone(), amount.minor, paid),
        );
    }
}

fn expect(expected: &mut Expected, event: &PaymentEvent) {
    let here = expected
        .intents
        .get(&event.ids().0.0)
        .is_some_and(|(g, _)| *g == expected.gateway);
    if !here && !matches!(event, PaymentEvent::PaymentIntentCreated { .. }) {
        return;
    }
    match event {
        PaymentEvent::PaymentIntentCreated {
            payment_id,
            provider,
            provider_ref,
            ..
        } => {
            expected
                .intents
                .insert(payment_id.0, (provider.clone(), provider_ref.clone()));
        }
        PaymentEvent::PaymentSucceeded {
            payment_id, amount, ..
        } => {
            if let Some((_, r)) = expected.intents.get(&payment_id.0) {
                expected.book.charges.insert(r.clone(), amount.minor);
            }
        }
        PaymentEvent::RefundSucceeded {
            payment_id,
            refund_id,
            amount,
            ..
        } => {
            if let Some((_, r)) = expected.intents.get(&payment_id.0) {
                // The log keeps our refund id, the gateway its own: refunds compare per intent.
                expected
                    .book
                    .refunds
                    .insert(refund_id.to_string(), (r.clone(), amount.minor));
            }
        }
        PaymentEvent::FundsTransferred {
            transfer_id,
            transfer_ref,
            amount,
            ..
        } => {
            expected
                .transfer_refs
                .insert(*transfer_id, transfer_ref.clone());
            expected
                .book
                .transfers
                .insert(transfer_ref.clone(), (String::new(), amount.minor, 0));
        }
        PaymentEvent::TransferReversed {
            transfer_id,
            amount,
            ..
        } => {
            if let Some(t) = expected
                .transfer_refs
                .get(transfer_id)
                .and_then(|r| expected.book.transfers.get_mut(r))
            {
                t.2 += amount.minor;
            }
        }
        _ => {}
    }
}

/// Compares the two books; every disagreement is one line.
fn differences(expected: &GatewayBook, actual: &GatewayBook) -> Vec<String> {
    let mut out = Vec::new();
    for (intent, amount) in &expected.charges {
        match actual.charges.get(intent) {
            Some(a) if a == amount => {}
            Some(a) => out.push(format!(
                "charge {intent}: the log has {amount}, the gateway {a}"
            )),
            None => out.push(format!(
                "charge {intent}: the log has {amount}, the gateway has no succeeded charge"
            )),
        }
    }
    for (intent, amount) in &actual.charges {
        if !expected.charges.contains_key(intent) {
            out.push(format!(
                "charge {intent}: the gateway has {amount}, the log has no succeeded payment"
            ));
        }
    }
    let per_intent = |b: &GatewayBook| {
        let mut m: BTreeMap<String, i64> = BTreeMap::new();
        for (intent, amount) in b.refunds.values() {
            *m.entry(intent.clone()).or_default() += amount;
        }
        m
    };
    let (want, have) = (per_intent(expected), per_intent(actual));
    for intent in want
        .keys()
        .chain(have.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (w, h) = (
            want.get(intent).copied().unwrap_or(0),
            have.get(intent).copied().unwrap_or(0),
        );
        if w != h {
            out.push(format!(
                "refunds of {intent}: the log has {w}, the gateway {h}"
            ));
        }
    }
    for (transfer, (_, amount, reversed)) in &expected.transfers {
        match actual.transfers.get(transfer) {
            Some((_, a, r)) if a == amount && r == reversed => {}
            Some((_, a, r)) => out.push(format!(
                "transfer {transfer}: the log has {amount} (reversed {reversed}), the gateway {a} (reversed {r})"
            )),
            None => out.push(format!(
                "transfer {transfer}: the log has {amount}, the gateway has none"
            )),
        }
    }
    let state = |paid: bool| if paid { "paid" } else { "failed" };
    for (payout, (account, amount, paid)) in &expected.payouts {
        match actual.payouts.get(payout) {
            Some((_, a, p)) if a == amount && p == paid => {}
            Some((_, a, p)) => out.push(format!(
                "payout {payout} of {account}: the log has {amount} {}, the gateway {a} {}",
                state(*paid),
                state(*p)
            )),
            None => out.push(format!(
                "payout {payout} of {account}: the log has {amount} {}, the gateway has none",
                state(*paid)
            )),
        }
    }
    for (payout, (account, amount, paid)) in &actual.payouts {
        if !expected.payouts.contains_key(payout) {
            out.push(format!(
                "payout {payout} of {account}: the gateway has {amount} {}, the log has no such payout",
                state(*paid)
            ));
        }
    }
    for (transfer, (destination, amount, _)) in &actual.transfers {
        if !expected.transfers.contains_key(transfer) {
            out.push(format!(
                "transfer {transfer}: the gateway sent {amount} to {destination}, the log has no such transfer"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(
        charges: &[(&str, i64)],
        refunds: &[(&str, &str, i64)],
        transfers: &[(&str, i64, i64)],
    ) -> GatewayBook {
        GatewayBook {
            charges: charges.iter().map(|(r, a)| ((*r).into(), *a)).collect(),
            refunds: refunds
                .iter()
                .map(|(id, pi, a)| ((*id).into(), ((*pi).into(), *a)))
                .collect(),
            transfers: transfers
                .iter()
                .map(|(r, a, v)| ((*r).into(), ("acct_1".into(), *a, *v)))
                .collect(),
            payouts: BTreeMap::new(),
        }
    }

    #[test]
    fn every_disagreement_with_the_gateway_is_named() {
        let log = book(
            &[("pi_1", 10_000), ("pi_2", 5_000)],
            &[("r1", "pi_1", 4_000)],
            &[("tr_1", 8_500, 3_400), ("tr_2", 4_250, 0)],
        );
        let mut log = log;
        log.payouts
            .insert("po_1".into(), ("acct_1".into(), 12_000, true));
        log.payouts
            .insert("po_2".into(), ("acct_1".into(), 500, false));
        assert_eq!(differences(&log, &log.clone()), Vec::<String>::new());
        let mut gateway = book(
            &[("pi_1", 10_000), ("pi_2", 4_999), ("pi_3", 700)],
            // Refunds compare per intent: the gateway's ids are its own.
            &[
                ("re_a", "pi_1", 3_000),
                ("re_b", "pi_1", 1_000),
                ("re_c", "pi_2", 100),
            ],
            &[("tr_1", 8_500, 3_000), ("tr_9", 1_000, 0)],
        );
        // The bank returned po_1 after the log recorded it paid; po_3 the log never saw.
        gateway
            .payouts
            .insert("po_1".into(), ("acct_1".into(), 12_000, false));
        gateway
            .payouts
            .insert("po_2".into(), ("acct_1".into(), 500, false));
        gateway
            .payouts
            .insert("po_3".into(), ("acct_1".into(), 900, true));
        assert_eq!(
            differences(&log, &gateway),
            vec![
                "charge pi_2: the log has 5000, the gateway 4999",
                "charge pi_3: the gateway has 700, the log has no succeeded payment",
                "refunds of pi_2: the log has 0, the gateway 100",
                "transfer tr_1: the log has 8500 (reversed 3400), the gateway 8500 (reversed 3000)",
                "transfer tr_2: the log has 4250, the gateway has none",
                "payout po_1 of acct_1: the log has 12000 paid, the gateway 12000 failed",
                "payout po_3 of acct_1: the gateway has 900 paid, the log has no such payout",
                "transfer tr_9: the gateway sent 1000 to acct_1, the log has no such transfer",
            ]
        );
    }
}
