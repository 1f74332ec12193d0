//! What text the platform accepts, decided once, at the boundary. Every JSON body goes through
//! [`check`] before it is decoded into a request type, so no handler sees text outside this
//! policy and nothing outside it reaches the log (which refuses it too, with a typed error):
//!
//! - no string anywhere contains U+0000 or another control character (Unicode category Cc:
//!   C0, DEL and C1), except that the long free-text fields ([`MULTI_LINE`]: descriptions and
//!   review texts) may hold line breaks and tabs;
//! - a single-line string (names, e-mail addresses, reasons, titles, codes, passwords…) has at
//!   most [`MAX_SINGLE_LINE`] characters, a multi-line one at most [`MAX_MULTI_LINE`]; fields
//!   with tighter rules (a display name's 100 characters, a review's length) are checked by the
//!   domain as before.
//!
//! A refusal is a 422 `request.invalid` naming each offending field by its JSON path.

use serde_json::Value;

use super::error::FieldError;

/// Longest single-line string, in characters.
pub const MAX_SINGLE_LINE: usize = 1_000;
/// Longest multi-line string, in characters.
pub const MAX_MULTI_LINE: usize = 20_000;
/// Fields that may span several lines.
pub const MULTI_LINE: &[&str] = &["description", "text"];

/// Why `s` is refused in a field that is (or is not) multi-line, if it is.
pub fn refusal(s: &str, multi_line: bool) -> Option<String> {
    if s.contains('\0') {
        return Some("must not contain U+0000 (NUL)".into());
    }
    let allowed = |c: char| multi_line && matches!(c, '\n' | '\r' | '\t');
    if let Some(c) = s.chars().find(|c| c.is_control() && !allowed(*c)) {
        return Some(format!(
            "must not contain the control character U+{:04X}",
            c as u32
        ));
    }
    let max = if multi_line {
        MAX_MULTI_LINE
    } else {
        MAX_SINGLE_LINE
    };
    let len = s.chars().count();
    (len > max).then(|| format!("has {len} characters; at most {max} are accepted"))
}

/// Every string in `value` that the policy refuses, with its JSON path.
pub fn check(value: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    walk(value, String::new(), false, &mut errors);
    errors
}

fn walk(value: &Value, path: String, multi_line: bool, errors: &mut Vec<FieldError>) {
    match value {
        Value::String(s) => {
            if let Some(message) = refusal(s, multi_line) {
                errors.push(FieldError {
                    field: path,
                    message,
                });
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{path}[{i}]"), multi_line, errors);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                if let Some(message) = refusal(key, false) {
                    errors.push(FieldError {
                        field: path.clone(),
                        message: format!("a field name {message}"),
                    });
                    continue;
                }
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(item, child, MULTI_LINE.contains(&key.as_str()), errors);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_and_controls_are_refused_with_their_path() {
        let errors = check(&json!({
            "reason": "changed my mind\u{0}",
            "destination": { "name": "Ro\u{7}me" },
            "includes": ["ok", "tab\there"],
            "description": "two\nlines\tand a tab",
            "text": "nul\u{0}",
        }));
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["destination.name", "includes[1]", "reason", "text"],
            "{errors:?}"
        );
        assert!(errors[2].message.contains("NUL"), "{errors:?}");
    }

    #[test]
    fn c1_controls_and_overlong_strings_are_refused() {
        assert!(refusal("a\u{85}b", true).is_some());
        assert!(refusal(&"x".repeat(MAX_SINGLE_LINE + 1), false).is_some());
        assert!(refusal(&"x".repeat(MAX_SINGLE_LINE + 1), true).is_none());
        assert!(refusal("Zoë's café — Øresund ✓", false).is_none());
    }
}
