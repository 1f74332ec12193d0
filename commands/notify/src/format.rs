//! Amounts and times as a reader of each language expects them. The platform speaks two
//! languages, so the few rules are written here rather than pulling in a locale database:
//! English puts the symbol first with a decimal point (€1,234.50), German after with a
//! decimal comma (1.234,50 €). Currencies without minor units (JPY, KRW, ...) print none.

use chrono::{DateTime, Datelike, Timelike, Utc};
use tessera_domain::user::Locale;

/// Currencies whose minor unit is the unit itself (ISO 4217 exponent 0).
const NO_MINOR_UNIT: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];

fn symbol(currency: &str) -> Option<&'static str> {
    Some(match currency {
        "EUR" => "€",
        "USD" => "$",
        "GBP" => "£",
        "JPY" => "¥",
        _ => return None,
    })
}

fn grouped(units: u64, separator: char) -> String {
    let digits = units.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(separator);
        }
        out.push(c);
    }
    out
}

/// `minor` units of `currency` as `locale` writes them.
pub fn money(minor: i64, currency: &str, locale: Locale) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let (group, point) = match locale {
        Locale::En => (',', '.'),
        Locale::De => ('.', ','),
    };
    let number = if NO_MINOR_UNIT.contains(&currency) {
        grouped(abs, group)
    } else {
        format!("{}{point}{:02}", grouped(abs / 100, group), abs % 100)
    };
    match (locale, symbol(currency)) {
        (Locale::En, Some(s)) => format!("{sign}{s}{number}"),
        (Locale::En, None) => format!("{sign}{currency} {number}"),
        (Locale::De, Some(s)) => format!("{sign}{number} {s}"),
        (Locale::De, None) => format!("{sign}{number} {currency}"),
    }
}

const EN_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const DE_DAYS: [&str; 7] = [
    "Montag",
    "Dienstag",
    "Mittwoch",
    "Donnerstag",
    "Freitag",
    "Samstag",
    "Sonntag",
];
const EN_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DE_MONTHS: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];

/// A moment as `locale` writes a date and time (in UTC, which the message says).
pub fn when(at: DateTime<Utc>, locale: Locale) -> String {
    let day = at.weekday().num_days_from_monday() as usize;
    let month = at.month0() as usize;
    let (h, m) = (at.hour(), at.minute());
    match locale {
        Locale::En => format!(
            "{}, {} {} {}, {h:02}:{m:02} UTC",
            EN_DAYS[day],
            at.day(),
            EN_MONTHS[month],
            at.year()
        ),
        Locale::De => format!(
            "{}, {}. {} {}, {h:02}:{m:02} Uhr UTC",
            DE_DAYS[day],
            at.day(),
            DE_MONTHS[month],
            at.year()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn amounts_follow_the_language() {
        assert_eq!(money(123_450, "EUR", Locale::En), "€1,234.50");
        assert_eq!(money(123_450, "EUR", Locale::De), "1.234,50 €");
        assert_eq!(money(5, "USD", Locale::En), "$0.05");
        assert_eq!(money(1_999, "CHF", Locale::En), "CHF 19.99");
        assert_eq!(money(1_999, "CHF", Locale::De), "19,99 CHF");
        assert_eq!(money(1_500, "JPY", Locale::En), "¥1,500");
        assert_eq!(money(-2_500, "GBP", Locale::En), "-£25.00");
    }

    #[test]
    fn times_follow_the_language() {
        let at = Utc.with_ymd_and_hms(2026, 12, 12, 14, 5, 0).unwrap();
        assert_eq!(
            when(at, Locale::En),
            "Saturday, 12 December 2026, 14:05 UTC"
        );
        assert_eq!(
            when(at, Locale::De),
            "Samstag, 12. Dezember 2026, 14:05 Uhr UTC"
        );
    }
}
