//! Every message in every language, rendered with one sample context and compared with its
//! golden file in `commands/notify/tests/golden/<lang>/<message>.txt` (subject, plain text and
//! HTML). `TESSERA_WRITE_GOLDEN=1` writes them; review the diff like code.

use serde_json::json;
use tessera_domain::user::Locale;
use tessera_notify::format;
use tessera_notify::templates::{Template, render};

fn sample(template: Template, locale: Locale) -> serde_json::Value {
    use chrono::TimeZone;
    let at = |d, h, m| {
        format::when(
            chrono::Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap(),
            locale,
        )
    };
    let eur = |minor| format::money(minor, "EUR", locale);
    let slots = json!([
        { "starts": at(20, 10, 0), "listing": "Sunrise kayak tour", "confirmed": 5, "capacity": 10, "held": 2 },
        { "starts": at(20, 16, 0), "listing": "Sunset sail", "confirmed": 0, "capacity": 8, "held": 0 },
    ]);
    json!({
        "name": "Ada <Lovelace>",
        "booking_ref": "0193A1B2",
        "booking_url": "https://tessera.example/bookings/0193a1b2",
        "pay_url": "https://tessera.example/bookings/0193a1b2/pay",
        "receipt_url": "https://tessera.example/bookings/0193a1b2/receipt?format=pdf",
        "review_url": "https://tessera.example/bookings/0193a1b2/review",
        "listing_url": "https://tessera.example/listings/42",
        "manifest_url": "https://tessera.example/provider/slots/7/manifest",
        "points_url": "https://tessera.example/me/loyalty",
        "listing": "Sunrise kayak tour & breakfast",
        "place": "Lisbon, PT",
        "starts": at(20, 10, 0),
        "previous_starts": at(13, 10, 0),
        "ends": at(20, 14, 0),
        "hold_expires": at(1, 9, 15),
        "seats": 2,
        "total": eur(10_000),
        "paid": eur(10_000),
        "amount": eur(5_000),
        "total_refunded": eur(5_000),
        "tax": eur(909),
        "tax_rate": "10.00 %",
        "number": "2026-000001",
        "refund": eur(5_000),
        "charged": null,
        "reason": "storm warning",
        "customer": "Ada",
        "by": "the customer",
        "points": "100",
        "badge": "First traveller",
        "link": "https://tessera.example/reset/abc",
        "expires": at(1, 10, 0),
        "url": "https://hooks.example.com/tessera",
        "day": "2026-12-20",
        "booked": 7,
        "slots_url": "https://tessera.example/provider/slots",
        "slots": slots,
        "endpoint_url": "https://tessera.example/webhooks/0193",
        "unsubscribe": template
            .marketing()
            .then_some("https://tessera.example/unsubscribe/t0k3n"),
    })
}

#[test]
fn every_message_renders_in_every_language_as_its_golden_file() {
    let write = std::env::var("TESSERA_WRITE_GOLDEN").is_ok_and(|v| v == "1");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    let mut stale = Vec::new();
    for locale in [
        tessera_domain::user::Locale::En,
        tessera_domain::user::Locale::De,
    ] {
        for template in Template::ALL {
            let r = render(template, locale, &sample(template, locale))
                .unwrap_or_else(|e| panic!("{}/{}: {e}", locale.as_str(), template.name()));
            assert!(!r.subject.is_empty() && !r.subject.contains('\n'));
            assert!(
                r.html.contains("Ada &lt;Lovelace&gt;"),
                "HTML is escaped: {}",
                template.name()
            );
            assert!(r.text.contains("Ada <Lovelace>"), "plain text is not");
            assert_eq!(
                r.text.contains("t0k3n"),
                template.marketing(),
                "only optional messages carry an unsubscribe link"
            );
            let text = format!(
                "Subject: {}\n\n{}\n----- html -----\n{}",
                r.subject, r.text, r.html
            );
            let path = format!("{root}/{}/{}.txt", locale.as_str(), template.name());
            if write {
                std::fs::create_dir_all(format!("{root}/{}", locale.as_str())).expect("dir");
                std::fs::write(&path, &text).expect("write");
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "golden files differ (TESSERA_WRITE_GOLDEN=1 rewrites them): {stale:#?}"
    );
}

#[test]
fn a_template_missing_a_value_is_an_error_not_a_blank() {
    let mut context = sample(Template::BookingConfirmed, Locale::En);
    context.as_object_mut().expect("object").remove("listing");
    assert!(
        render(
            Template::BookingConfirmed,
            tessera_domain::user::Locale::En,
            &context
        )
        .is_err()
    );
}
