//! Recurring schedules: "every Tuesday and Saturday at 09:00 Lisbon time, 10 seats, from March
//! to October", as an iCalendar RRULE (RFC 5545, evaluated by the `rrule` crate, daylight
//! saving included) from which slots are generated.
//!
//! The schedule's stream records which slot it generated for which start (`ScheduleSlotsGenerated`),
//! so generating again creates nothing twice: a start the schedule already holds is skipped, and
//! a generated slot's id derives from the schedule, its revision and its start. A change (or the
//! end of the schedule) applies to future slots nobody has booked; booked slots stay as they are
//! and stay the schedule's (`kept`). Exceptions remove single dates.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rrule::{RRuleSet, Tz};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{ListingId, Money, ScheduleId, SlotId, UserId};

/// The most slots one generation creates, and how far ahead a schedule may generate.
pub const MAX_PER_GENERATION: u16 = 500;
pub const MAX_HORIZON_DAYS: u32 = 400;
const MAX_DURATION_MINUTES: u32 = 30 * 24 * 60;

/// When: an RRULE (without `DTSTART`) from a first local start in an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    /// The rule's value, e.g. `FREQ=WEEKLY;BYDAY=TU,SA;UNTIL=20261031T235959Z`.
    pub rrule: String,
    /// The first occurrence, in local time.
    pub starts: NaiveDateTime,
    /// IANA name, e.g. `Europe/Lisbon`.
    pub timezone: String,
}

impl Recurrence {
    fn set(&self) -> Result<RRuleSet, ScheduleError> {
        let rule = self.rrule.trim();
        let rule = rule.strip_prefix("RRULE:").unwrap_or(rule);
        if rule.is_empty() || rule.len() > 500 || rule.contains(['\n', '\r', '\0']) {
            return Err(ScheduleError::InvalidRule(
                "one RRULE value of 1 to 500 characters".into(),
            ));
        }
        let freq = rule
            .split(';')
            .find_map(|p| p.strip_prefix("FREQ="))
            .unwrap_or_default();
        if !["DAILY", "WEEKLY", "MONTHLY", "YEARLY"].contains(&freq) {
            return Err(ScheduleError::InvalidRule(
                "FREQ is DAILY, WEEKLY, MONTHLY or YEARLY".into(),
            ));
        }
        if self.timezone.contains(['\n', '\r', ':', ';', '\0']) || self.timezone.len() > 64 {
            return Err(ScheduleError::InvalidRule("an IANA time zone name".into()));
        }
        let text = format!(
            "DTSTART;TZID={}:{}\nRRULE:{rule}",
            self.timezone,
            self.starts.format("%Y%m%dT%H%M%S")
        );
        text.parse::<RRuleSet>()
            .map_err(|e| ScheduleError::InvalidRule(e.to_string()))
    }

    /// Checks the rule parses.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        self.set().map(|_| ())
    }

    /// Starts strictly after `after` and before `before`, at most `limit`, in order.
    pub fn occurrences(
        &self,
        after: DateTime<Utc>,
        before: DateTime<Utc>,
        limit: u16,
    ) -> Result<Vec<DateTime<Utc>>, ScheduleError> {
        let set = self
            .set()?
            .after(after.with_timezone(&Tz::UTC))
            .before(before.with_timezone(&Tz::UTC));
        Ok(set
            .all(limit)
            .dates
            .into_iter()
            .map(|d| d.with_timezone(&Utc))
            .filter(|d| *d > after && *d < before)
            .collect())
    }

    /// The local date of a start in the schedule's time zone.
    pub fn local_date(&self, start: DateTime<Utc>) -> NaiveDate {
        match self.timezone.parse::<chrono_tz::Tz>() {
            Ok(tz) => start.with_timezone(&tz).date_naive(),
            Err(_) => start.date_naive(),
        }
    }
}

/// What each generated slot is like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotTemplate {
    pub duration_minutes: u32,
    pub capacity: u32,
    pub price_per_seat: Money,
}

impl SlotTemplate {
    fn validate(&self) -> Result<(), ScheduleError> {
        if !(1..=MAX_DURATION_MINUTES).contains(&self.duration_minutes) {
            return Err(ScheduleError::Invalid("duration is 1 minute to 30 days"));
        }
        if !(1..=10_000).contains(&self.capacity) {
            return Err(ScheduleError::Invalid("capacity is 1 to 10,000"));
        }
        Ok(())
    }
}

/// One slot a schedule generated, at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedSlot {
    pub slot_id: SlotId,
    pub starts_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub id: ScheduleId,
    pub listing_id: ListingId,
    pub provider_id: UserId,
    pub recurrence: Recurrence,
    pub template: SlotTemplate,
    pub horizon_days: u32,
    /// Bumped by every change and every exception taken back: ids of slots generated from
    /// then on differ from every earlier one.
    pub revision: u32,
    /// Local dates without a slot.
    pub exceptions: BTreeSet<NaiveDate>,
    /// The schedule's slots by start: generated under this revision, or kept (booked) from
    /// an earlier one.
    pub slots: BTreeMap<DateTime<Utc>, SlotId>,
    pub ended: bool,
}

impl Schedule {
    /// The id of the slot this revision generates at `start`.
    pub fn slot_id_at(&self, start: DateTime<Utc>) -> SlotId {
        SlotId(crate::values::derived_id(
            self.id.0,
            format!("r{}:{}", self.revision, start.timestamp()).as_bytes(),
        ))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub enum ScheduleState {
    #[default]
    New,
    Defined(Box<Schedule>),
}

#[derive(Debug, Clone)]
pub enum ScheduleCommand {
    Define {
        id: ScheduleId,
        listing_id: ListingId,
        provider_id: UserId,
        recurrence: Recurrence,
        template: SlotTemplate,
        horizon_days: u32,
    },
    /// A new rule or template for future slots; `kept` are the schedule's future slots that
    /// stay (booked ones), the others having been withdrawn.
    Change {
        recurrence: Recurrence,
        template: SlotTemplate,
        horizon_days: u32,
        kept: Vec<GeneratedSlot>,
    },
    /// Record slots just generated (those already recorded are left out).
    RecordGenerated {
        slots: Vec<GeneratedSlot>,
    },
    AddException {
        date: NaiveDate,
    },
    RemoveException {
        date: NaiveDate,
    },
    End {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ScheduleEvent {
    ScheduleDefined {
        schedule_id: ScheduleId,
        listing_id: ListingId,
        provider_id: UserId,
        recurrence: Recurrence,
        template: SlotTemplate,
        horizon_days: u32,
    },
    ScheduleChanged {
        schedule_id: ScheduleId,
        recurrence: Recurrence,
        template: SlotTemplate,
        horizon_days: u32,
        revision: u32,
        kept: Vec<GeneratedSlot>,
    },
    ScheduleSlotsGenerated {
        schedule_id: ScheduleId,
        revision: u32,
        slots: Vec<GeneratedSlot>,
    },
    ScheduleExceptionAdded {
        schedule_id: ScheduleId,
        date: NaiveDate,
    },
    ScheduleExceptionRemoved {
        schedule_id: ScheduleId,
        date: NaiveDate,
        revision: u32,
    },
    ScheduleEnded {
        schedule_id: ScheduleId,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the schedule already exists")]
    AlreadyDefined,
    #[error("the schedule does not exist")]
    NotDefined,
    #[error("the schedule has ended")]
    Ended,
    #[error("invalid recurrence rule: {0}")]
    InvalidRule(String),
    #[error("invalid schedule: {0}")]
    Invalid(&'static str),
    #[error("{0} is already an exception")]
    AlreadyException(NaiveDate),
    #[error("{0} is not an exception")]
    NotException(NaiveDate),
    #[error("the slot on {0} has bookings: cancel it explicitly (its bookings are refunded)")]
    OccurrenceBooked(NaiveDate),
}

/// Checks a rule, a template and a horizon.
pub fn check(
    recurrence: &Recurrence,
    template: &SlotTemplate,
    horizon_days: u32,
) -> Result<(), ScheduleError> {
    recurrence.validate()?;
    template.validate()?;
    if !(1..=MAX_HORIZON_DAYS).contains(&horizon_days) {
        return Err(ScheduleError::Invalid("the horizon is 1 to 400 days"));
    }
    Ok(())
}

#[derive(Debug)]
pub struct ScheduleAggregate;

impl Aggregate for ScheduleAggregate {
    type State = ScheduleState;
    type Command = ScheduleCommand;
    type Event = ScheduleEvent;
    type Error = ScheduleError;
    const CATEGORY: &'static str = "schedule";

    fn decide(
        state: &ScheduleState,
        command: &ScheduleCommand,
    ) -> Result<Vec<ScheduleEvent>, ScheduleError> {
        let s = match (state, command) {
            (
                ScheduleState::New,
                ScheduleCommand::Define {
                    id,
                    listing_id,
                    provider_id,
                    recurrence,
                    template,
                    horizon_days,
                },
            ) => {
                check(recurrence, template, *horizon_days)?;
                return Ok(vec![ScheduleEvent::ScheduleDefined {
                    schedule_id: *id,
                    listing_id: *listing_id,
                    provider_id: *provider_id,
                    recurrence: recurrence.clone(),
                    template: *template,
                    horizon_days: *horizon_days,
                }]);
            }
            (ScheduleState::Defined(_), ScheduleCommand::Define { .. }) => {
                return Err(ScheduleError::AlreadyDefined);
            }
            (ScheduleState::New, _) => return Err(ScheduleError::NotDefined),
            (ScheduleState::Defined(s), _) => s,
        };
        let schedule_id = s.id;
        if s.ended {
            return Err(ScheduleError::Ended);
        }
        Ok(match command {
            ScheduleCommand::Define { .. } => return Err(ScheduleError::AlreadyDefined),
            ScheduleCommand::Change {
                recurrence,
                template,
                horizon_days,
                kept,
            } => {
                check(recurrence, template, *horizon_days)?;
                if template.price_per_seat.currency != s.template.price_per_seat.currency {
                    return Err(ScheduleError::Invalid(
                        "slots are priced in the listing's currency",
                    ));
                }
                vec![ScheduleEvent::ScheduleChanged {
                    schedule_id,
                    recurrence: recurrence.clone(),
                    template: *template,
                    horizon_days: *horizon_days,
                    revision: s.revision + 1,
                    kept: kept.clone(),
                }]
            }
            ScheduleCommand::RecordGenerated { slots } => {
                let new: Vec<GeneratedSlot> = slots
                    .iter()
                    .filter(|g| !s.slots.contains_key(&g.starts_at))
                    .copied()
                    .collect();
                if new.is_empty() {
                    return Ok(vec![]);
                }
                vec![ScheduleEvent::ScheduleSlotsGenerated {
                    schedule_id,
                    revision: s.revision,
                    slots: new,
                }]
            }
            ScheduleCommand::AddException { date } => {
                if s.exceptions.contains(date) {
                    return Err(ScheduleError::AlreadyException(*date));
                }
                vec![ScheduleEvent::ScheduleExceptionAdded {
                    schedule_id,
                    date: *date,
                }]
            }
            ScheduleCommand::RemoveException { date } => {
                if !s.exceptions.contains(date) {
                    return Err(ScheduleError::NotException(*date));
                }
                vec![ScheduleEvent::ScheduleExceptionRemoved {
                    schedule_id,
                    date: *date,
                    revision: s.revision + 1,
                }]
            }
            ScheduleCommand::End { reason } => vec![ScheduleEvent::ScheduleEnded {
                schedule_id,
                reason: reason.clone(),
            }],
        })
    }

    fn evolve(state: ScheduleState, event: &ScheduleEvent) -> ScheduleState {
        match (state, event) {
            (
                ScheduleState::New,
                ScheduleEvent::ScheduleDefined {
                    schedule_id,
                    listing_id,
                    provider_id,
                    recurrence,
                    template,
                    horizon_days,
                },
            ) => ScheduleState::Defined(Box::new(Schedule {
                id: *schedule_id,
                listing_id: *listing_id,
                provider_id: *provider_id,
                recurrence: recurrence.clone(),
                template: *template,
                horizon_days: *horizon_days,
                revision: 0,
                exceptions: BTreeSet::new(),
                slots: BTreeMap::new(),
                ended: false,
            })),
            (ScheduleState::Defined(mut s), e) => {
                match e {
                    ScheduleEvent::ScheduleDefined { .. } => {}
                    ScheduleEvent::ScheduleChanged {
                        recurrence,
                        template,
                        horizon_days,
                        revision,
                        kept,
                        ..
                    } => {
                        s.recurrence = recurrence.clone();
                        s.template = *template;
                        s.horizon_days = *horizon_days;
                        s.revision = *revision;
                        // Future slots are what was kept; the rest were withdrawn (and
                        // past ones are never generated again: generation looks ahead only).
                        s.slots = kept.iter().map(|k| (k.starts_at, k.slot_id)).collect();
                    }
                    ScheduleEvent::ScheduleSlotsGenerated { slots, .. } => {
                        for g in slots {
                            s.slots.insert(g.starts_at, g.slot_id);
                        }
                    }
                    ScheduleEvent::ScheduleExceptionAdded { date, .. } => {
                        s.exceptions.insert(*date);
                        let on_date: Vec<_> = s
                            .slots
                            .keys()
                            .copied()
                            .filter(|at| s.recurrence.local_date(*at) == *date)
                            .collect();
                        for at in on_date {
                            s.slots.remove(&at);
                        }
                    }
                    ScheduleEvent::ScheduleExceptionRemoved { date, revision, .. } => {
                        s.exceptions.remove(date);
                        s.revision = *revision;
                    }
                    ScheduleEvent::ScheduleEnded { .. } => s.ended = true,
                }
                ScheduleState::Defined(s)
            }
            (state, _) => state,
        }
    }
}
