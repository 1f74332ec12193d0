//! Numbered documents: receipts for payments, credit notes for refunds, commission invoices
//! for providers. Each kind has one **gapless series per year** (`2026-000123`,
//! `CN-2026-000007`, `INV-2026-000003`), kept as a stream of its own (`series-<kind>-<year>`)
//! whose n-th event takes number n. A document is issued by one atomic append of its event (on
//! the stream of what it documents: the payment, the provider) and of the number's event, both
//! guarded by their expected versions: two concurrent issuers never share a number (one append
//! loses and takes the next), and none is skipped (a number exists only with its document).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::aggregate::Aggregate;

/// What a series numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Receipt,
    CreditNote,
    Invoice,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receipt => "receipt",
            Self::CreditNote => "credit-note",
            Self::Invoice => "invoice",
        }
    }

    /// What a number of this kind starts with, before the year.
    fn prefix(self) -> &'static str {
        match self {
            Self::Receipt => "",
            Self::CreditNote => "CN-",
            Self::Invoice => "INV-",
        }
    }

    /// The id of the series of `year` (`receipt-2026`), the stream `series-<id>`.
    pub fn series(self, year: i32) -> String {
        format!("{}-{year}", self.as_str())
    }
}

/// A document's number: its kind, year and place in the year's series (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocumentNumber {
    pub kind: DocumentKind,
    pub year: i32,
    pub seq: u64,
}

impl fmt::Display for DocumentNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}-{:06}", self.kind.prefix(), self.year, self.seq)
    }
}

impl FromStr for DocumentNumber {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = if let Some(r) = s.strip_prefix("CN-") {
            (DocumentKind::CreditNote, r)
        } else if let Some(r) = s.strip_prefix("INV-") {
            (DocumentKind::Invoice, r)
        } else {
            (DocumentKind::Receipt, s)
        };
        let bad = || format!("{s:?} is not a document number (2026-000123, CN-…, INV-…)");
        let (year, seq) = rest.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            kind,
            year: year.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for DocumentNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DocumentNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The tax included in `gross` at `rate_bp` basis points (prices are shown tax included):
/// `gross × rate / (1 + rate)`, rounded half up, in minor units.
pub fn tax_included(gross: i64, rate_bp: u32) -> i64 {
    let (g, r) = (i128::from(gross), i128::from(rate_bp));
    let denominator = 10_000 + r;
    ((g * r * 2 + denominator) / (2 * denominator)) as i64
}

/// A series: how many numbers it handed out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeriesState {
    pub taken: u64,
}

#[derive(Debug, Clone)]
pub enum SeriesCommand {
    /// The next number, for `document` (the payment, refund or invoice id).
    Take {
        kind: DocumentKind,
        year: i32,
        document: uuid::Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SeriesEvent {
    DocumentNumbered {
        number: DocumentNumber,
        document: uuid::Uuid,
    },
}

/// A gapless number series (stream `series-<kind>-<year>`).
#[derive(Debug)]
pub struct SeriesAggregate;

impl SeriesState {
    /// The number the next document of this series gets.
    pub fn next(&self, kind: DocumentKind, year: i32) -> DocumentNumber {
        DocumentNumber {
            kind,
            year,
            seq: self.taken + 1,
        }
    }
}

impl Aggregate for SeriesAggregate {
    type State = SeriesState;
    type Command = SeriesCommand;
    type Event = SeriesEvent;
    type Error = std::convert::Infallible;
    const CATEGORY: &'static str = "series";

    fn decide(
        state: &SeriesState,
        command: &SeriesCommand,
    ) -> Result<Vec<SeriesEvent>, std::convert::Infallible> {
        let SeriesCommand::Take {
            kind,
            year,
            document,
        } = command;
        Ok(vec![SeriesEvent::DocumentNumbered {
            number: state.next(*kind, *year),
            document: *document,
        }])
    }

    fn evolve(state: SeriesState, event: &SeriesEvent) -> SeriesState {
        let SeriesEvent::DocumentNumbered { number, .. } = event;
        SeriesState {
            taken: state.taken.max(number.seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_and_parse_with_their_kind_and_year() {
        for (text, kind) in [
            ("2026-000123", DocumentKind::Receipt),
            ("CN-2026-000007", DocumentKind::CreditNote),
            ("INV-2027-000003", DocumentKind::Invoice),
        ] {
            let n: DocumentNumber = text.parse().expect("parses");
            assert_eq!(n.kind, kind);
            assert_eq!(n.to_string(), text);
        }
        assert!("2026".parse::<DocumentNumber>().is_err());
        assert!("CN-x-1".parse::<DocumentNumber>().is_err());
    }

    #[test]
    fn included_tax_rounds_half_up() {
        // 119.00 at 19 % includes 19.00; 10.00 at 7 % includes 0.654… → 0.65.
        assert_eq!(tax_included(11_900, 1900), 1_900);
        assert_eq!(tax_included(1_000, 700), 65);
        assert_eq!(tax_included(1_000, 0), 0);
        // 0.5 of a cent rounds up: 21 at 10 % is 1.909… → 2.
        assert_eq!(tax_included(21, 1000), 2);
    }

    #[test]
    fn a_series_hands_out_the_next_number() {
        let taken = SeriesAggregate::replay(&[SeriesEvent::DocumentNumbered {
            number: DocumentNumber {
                kind: DocumentKind::Receipt,
                year: 2026,
                seq: 1,
            },
            document: uuid::Uuid::nil(),
        }]);
        assert_eq!(
            taken.next(DocumentKind::Receipt, 2026).to_string(),
            "2026-000002"
        );
    }
}
