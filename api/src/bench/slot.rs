//! `tessera bench slot`: what deciding a hold costs on a busy slot, done as the command side does
//! it with a cached slot (copy the cached state, decide, copy it again and evolve it by the new
//! event), on a 10,000-seat slot already holding from 10 to 9,000 bookings. The baseline, measured in the
//! same run, is the same decision on a slot holding 10: a decision whose cost grows with the
//! number of holds shows as a ratio above 1. No database is involved.
#![allow(clippy::print_stdout)] // Benchmarks print their results.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use tessera_domain::Aggregate;
use tessera_domain::slot::{SlotAggregate, SlotCommand, SlotState};
use tessera_domain::values::{BookingId, Currency, ListingId, Money, Seats, SlotId, UserId};
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct SlotBenchArgs {
    /// Holds already on the slot, one measurement each (the first is the baseline).
    #[arg(long, value_delimiter = ',', default_value = "10,1000,5000,9000")]
    pub holds: Vec<u32>,
    /// Time spent measuring each slot size.
    #[arg(long, default_value_t = 1_000)]
    pub millis: u64,
}

pub fn run(args: &SlotBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.holds.is_empty(), "give at least one slot size");
    let now = Utc::now();
    println!("bench slot: one hold decision on a cached slot (copy, decide, copy and evolve)");
    println!(
        "| holds on the slot | decisions | ns per decision | vs {} holds |",
        args.holds[0]
    );
    println!("|---|---|---|---|");
    let mut baseline = None;
    for &n in &args.holds {
        let slot = busy_slot(n, now)?;
        let (decisions, per) = measure(&slot, now, Duration::from_millis(args.millis))?;
        let ns = per.as_nanos() as f64;
        let base = *baseline.get_or_insert(ns);
        println!("| {n} | {decisions} | {ns:.0} | {:.2}x |", ns / base);
    }
    Ok(())
}

/// A scheduled slot of 10,000 seats (the most a slot has) with `holds` bookings of one seat each.
fn busy_slot(holds: u32, now: chrono::DateTime<Utc>) -> anyhow::Result<SlotState> {
    let schedule = SlotCommand::Schedule {
        id: SlotId(Uuid::from_u128(1)),
        listing_id: ListingId(Uuid::from_u128(2)),
        provider_id: UserId(Uuid::from_u128(3)),
        starts_at: now + TimeDelta::days(30),
        ends_at: now + TimeDelta::days(30) + TimeDelta::hours(2),
        capacity: 10_000,
        price_per_seat: Money::new(5_000, Currency::EUR)?,
    };
    let mut state = apply(SlotState::default(), &schedule)?;
    for i in 0..holds {
        state = apply(state, &hold(u128::from(i), now)?)?;
    }
    Ok(state)
}

fn hold(i: u128, now: chrono::DateTime<Utc>) -> anyhow::Result<SlotCommand> {
    Ok(SlotCommand::HoldSeats {
        booking_id: BookingId(Uuid::from_u128(1_000 + i)),
        seats: Seats::new(1)?,
        now,
        allow_overbook: false,
    })
}

fn apply(state: SlotState, command: &SlotCommand) -> anyhow::Result<SlotState> {
    let events = SlotAggregate::decide(&state, command)?;
    Ok(events.iter().fold(state, SlotAggregate::evolve))
}

/// Decides new holds on copies of `slot` (which keeps its size) for `budget`.
fn measure(
    slot: &SlotState,
    now: chrono::DateTime<Utc>,
    budget: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut decisions = 0u64;
    while decisions < 100 || started.elapsed() < budget {
        let command = hold(u128::MAX / 2 + u128::from(decisions), now)?;
        // The cache hands the decision a copy of the cached state...
        let loaded = slot.clone();
        let events = SlotAggregate::decide(&loaded, &command)?;
        // ...and, once appended, evolves another copy into the new cached state.
        let advanced = events.iter().fold(loaded.clone(), SlotAggregate::evolve);
        std::hint::black_box((loaded, advanced));
        decisions += 1;
    }
    let per = started.elapsed().as_secs_f64() / decisions as f64;
    Ok((decisions, Duration::from_secs_f64(per)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_slot_holds_what_was_asked_and_each_decision_adds_one_hold() {
        let now = Utc::now();
        let SlotState::Scheduled(slot) = busy_slot(50, now).expect("slot") else {
            panic!("the slot is scheduled");
        };
        assert_eq!((slot.holds.len(), slot.taken()), (50, 50));
        let state = busy_slot(50, now).expect("slot");
        let next = apply(state, &hold(u128::MAX / 2, now).expect("hold")).expect("decided");
        let SlotState::Scheduled(next) = next else {
            panic!("the slot is scheduled");
        };
        assert_eq!(next.taken(), 51);
    }
}
