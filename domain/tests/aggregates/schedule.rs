//! Recurring schedules: rules evaluated in their time zone, generation recorded once, changes
//! keeping what was booked, exceptions, the end.

use chrono::{DateTime, NaiveDate, TimeZone, Timelike, Utc};
use tessera_domain::Aggregate;
use tessera_domain::aggregate::spec::given;
use tessera_domain::schedule::{
    GeneratedSlot, Recurrence, ScheduleAggregate as A, ScheduleCommand as C, ScheduleError as E,
    ScheduleEvent as Ev, ScheduleState, SlotTemplate,
};
use tessera_domain::values::{Currency, ListingId, Money, ScheduleId, SlotId, UserId};
use uuid::Uuid;

const ID: ScheduleId = ScheduleId(Uuid::from_u128(1));

fn recurrence(rrule: &str) -> Recurrence {
    Recurrence {
        rrule: rrule.into(),
        starts: NaiveDate::from_ymd_opt(2026, 3, 3)
            .and_then(|d| d.and_hms_opt(9, 0, 0))
            .expect("start"),
        timezone: "Europe/Lisbon".into(),
    }
}

fn template(capacity: u32) -> SlotTemplate {
    SlotTemplate {
        duration_minutes: 120,
        capacity,
        price_per_seat: Money::new(4_500, Currency::EUR).expect("money"),
    }
}

fn defined() -> Ev {
    Ev::ScheduleDefined {
        schedule_id: ID,
        listing_id: ListingId(Uuid::from_u128(2)),
        provider_id: UserId(Uuid::from_u128(3)),
        recurrence: recurrence("FREQ=WEEKLY;BYDAY=TU,SA;UNTIL=20261031T235959Z"),
        template: template(10),
        horizon_days: 90,
    }
}

fn utc(m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, m, d, h, 0, 0)
        .single()
        .expect("time")
}

fn slot(n: u128, at: DateTime<Utc>) -> GeneratedSlot {
    GeneratedSlot {
        slot_id: SlotId(Uuid::from_u128(100 + n)),
        starts_at: at,
    }
}

fn state(history: &[Ev]) -> tessera_domain::schedule::Schedule {
    match A::replay(history) {
        ScheduleState::Defined(s) => *s,
        ScheduleState::New => panic!("not defined"),
    }
}

#[test]
fn occurrences_follow_local_time_across_daylight_saving() {
    let r = recurrence("FREQ=WEEKLY;BYDAY=TU,SA;UNTIL=20261031T235959Z");
    let starts = r
        .occurrences(utc(3, 20, 0), utc(4, 10, 0), 100)
        .expect("rule");
    // 09:00 in Lisbon: 09:00 UTC in winter, 08:00 UTC from 29 March.
    let hours: Vec<(u32, u32)> = starts
        .iter()
        .map(|s| (chrono::Datelike::day(s), s.hour()))
        .collect();
    assert_eq!(
        hours,
        vec![(21, 9), (24, 9), (28, 9), (31, 8), (4, 8), (7, 8)]
    );
    // UNTIL ends it; the bound is exclusive on both sides.
    assert!(
        r.occurrences(utc(11, 1, 0), utc(12, 31, 0), 100)
            .expect("rule")
            .is_empty()
    );
    assert_eq!(
        r.occurrences(utc(3, 21, 9), utc(3, 24, 9), 100)
            .expect("rule"),
        Vec::<DateTime<Utc>>::new()
    );
    assert_eq!(
        r.local_date(utc(3, 31, 23)),
        NaiveDate::from_ymd_opt(2026, 4, 1).expect("d")
    );
}

#[test]
fn malformed_rules_are_refused() {
    for rule in [
        "",
        "FREQ=SECONDLY",
        "FREQ=HOURLY",
        "FREQ=WEEKLY;BYDAY=XX",
        "FREQ=DAILY\nRRULE:FREQ=SECONDLY",
        "BYDAY=TU",
    ] {
        assert!(
            matches!(recurrence(rule).validate(), Err(E::InvalidRule(_))),
            "{rule:?}"
        );
    }
    let mut bad_zone = recurrence("FREQ=DAILY");
    bad_zone.timezone = "Mars/Olympus".into();
    assert!(matches!(bad_zone.validate(), Err(E::InvalidRule(_))));
    given::<A>(&[]).when_err(
        C::Define {
            id: ID,
            listing_id: ListingId(Uuid::from_u128(2)),
            provider_id: UserId(Uuid::from_u128(3)),
            recurrence: recurrence("FREQ=DAILY"),
            template: template(0),
            horizon_days: 90,
        },
        E::Invalid("capacity is 1 to 10,000"),
    );
}

#[test]
fn generated_slots_are_recorded_once() {
    let first = [slot(1, utc(3, 21, 9)), slot(2, utc(3, 24, 9))];
    let history = [
        defined(),
        Ev::ScheduleSlotsGenerated {
            schedule_id: ID,
            revision: 0,
            slots: first.to_vec(),
        },
    ];
    // The same slots again: nothing; with one more: only that one.
    given::<A>(&history).when_then(
        C::RecordGenerated {
            slots: first.to_vec(),
        },
        &[],
    );
    let more = slot(3, utc(3, 28, 9));
    given::<A>(&history).when_then(
        C::RecordGenerated {
            slots: vec![first[0], more],
        },
        &[Ev::ScheduleSlotsGenerated {
            schedule_id: ID,
            revision: 0,
            slots: vec![more],
        }],
    );
    // Ids differ by revision and start.
    let s = state(&history);
    assert_ne!(s.slot_id_at(utc(3, 21, 9)), s.slot_id_at(utc(3, 24, 9)));
}

#[test]
fn a_change_keeps_what_it_names_and_an_exception_taken_back_gives_new_ids() {
    let booked = slot(1, utc(3, 21, 9));
    let history = [
        defined(),
        Ev::ScheduleSlotsGenerated {
            schedule_id: ID,
            revision: 0,
            slots: vec![booked, slot(2, utc(3, 24, 9))],
        },
    ];
    let after = given::<A>(&history).when_then(
        C::Change {
            recurrence: recurrence("FREQ=WEEKLY;BYDAY=TU"),
            template: template(12),
            horizon_days: 60,
            kept: vec![booked],
        },
        &[Ev::ScheduleChanged {
            schedule_id: ID,
            recurrence: recurrence("FREQ=WEEKLY;BYDAY=TU"),
            template: template(12),
            horizon_days: 60,
            revision: 1,
            kept: vec![booked],
        }],
    );
    let ScheduleState::Defined(s) = after else {
        panic!("defined")
    };
    assert_eq!(s.slots.len(), 1);
    assert_eq!(s.revision, 1);
    // Another currency is refused.
    given::<A>(&history).when_err(
        C::Change {
            recurrence: recurrence("FREQ=WEEKLY;BYDAY=TU"),
            template: SlotTemplate {
                price_per_seat: Money::new(100, Currency::new("USD").expect("usd")).expect("money"),
                ..template(12)
            },
            horizon_days: 60,
            kept: vec![],
        },
        E::Invalid("slots are priced in the listing's currency"),
    );

    // An exception drops the date's slot; taking it back bumps the revision (new slot ids).
    let day = NaiveDate::from_ymd_opt(2026, 3, 24).expect("date");
    let mut h = history.to_vec();
    h.push(Ev::ScheduleExceptionAdded {
        schedule_id: ID,
        date: day,
    });
    let s = state(&h);
    assert!(!s.slots.contains_key(&utc(3, 24, 9)));
    given::<A>(&h).when_err(C::AddException { date: day }, E::AlreadyException(day));
    let before = s.slot_id_at(utc(3, 24, 9));
    h.push(Ev::ScheduleExceptionRemoved {
        schedule_id: ID,
        date: day,
        revision: 1,
    });
    let s = state(&h);
    assert!(s.exceptions.is_empty());
    assert_ne!(s.slot_id_at(utc(3, 24, 9)), before);
    given::<A>(&h).when_err(C::RemoveException { date: day }, E::NotException(day));

    // Ended, it refuses everything.
    h.push(Ev::ScheduleEnded {
        schedule_id: ID,
        reason: "season over".into(),
    });
    given::<A>(&h).when_err(C::AddException { date: day }, E::Ended);
    given::<A>(&h).when_err(C::RecordGenerated { slots: vec![] }, E::Ended);
}
