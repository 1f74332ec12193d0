//! The published error codes: every `code` a problem response can carry, with its HTTP status,
//! title (the status's reason phrase) and one line of meaning. This table is the contract; `error.rs` maps every error to one
//! of its entries by an explicit match (never by a type's or variant's name), so renaming a
//! Rust enum variant cannot change the API. `docs/errors.md` is generated from it and the
//! OpenAPI document lists it (the `code` enum of `Problem` and `x-error-codes`); a golden test
//! fails when a published code changes or disappears. Codes are never renamed or removed: a
//! code that stops being used stays listed.

use axum::http::StatusCode;

/// One published error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub code: &'static str,
    pub status: StatusCode,
    pub meaning: &'static str,
}

impl Code {
    /// The problem's `title`: the status's reason phrase.
    pub fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

macro_rules! codes {
    ($($name:ident = $code:literal, $status:ident, $meaning:literal;)*) => {
        $(
            #[doc = $meaning]
            pub const $name: Code = Code {
                code: $code,
                status: StatusCode::$status,
                meaning: $meaning,
            };
        )*
        /// Every published code, in the order of `docs/errors.md`.
        pub const ALL: &[Code] = &[$($name),*];
    };
}

codes! {
    // Requests: shape, size, headers, limits.
    REQUEST_BAD_REQUEST = "request.bad_request", BAD_REQUEST, "A request a layer refused as malformed, without a more precise code.";
    REQUEST_MALFORMED_JSON = "request.malformed_json", BAD_REQUEST, "The body is not syntactically valid JSON.";
    REQUEST_UNREADABLE_BODY = "request.unreadable_body", BAD_REQUEST, "The body could not be read (not UTF-8, cut short, or otherwise unusable).";
    REQUEST_INVALID_PATH = "request.invalid_path", BAD_REQUEST, "A path segment does not parse (for example, an id that is not a UUID).";
    REQUEST_INVALID_QUERY = "request.invalid_query", BAD_REQUEST, "The query string does not parse into the operation's parameters.";
    REQUEST_INVALID_IDEMPOTENCY_KEY = "request.invalid_idempotency_key", BAD_REQUEST, "An Idempotency-Key header is not 1 to 255 visible ASCII characters.";
    REQUEST_IDEMPOTENCY_KEY_REQUIRED = "request.idempotency_key_required", BAD_REQUEST, "The operation takes money or seats and needs an Idempotency-Key header.";
    REQUEST_INVALID_MIN_POSITION = "request.invalid_min_position", BAD_REQUEST, "Tessera-Min-Position is not a non-negative integer.";
    REQUEST_POSITION_BEYOND_HEAD = "request.position_beyond_head", BAD_REQUEST, "Tessera-Min-Position names a position the log has not reached.";
    REQUEST_INVALID = "request.invalid", UNPROCESSABLE_ENTITY, "A field's type, bounds or text is not accepted; `errors` names each field.";
    REQUEST_REASON_REQUIRED = "request.reason_required", UNPROCESSABLE_ENTITY, "An admin command needs a non-empty reason (recorded on its events).";
    REQUEST_UNSTORABLE_TEXT = "request.unstorable_text", UNPROCESSABLE_ENTITY, "A text contains U+0000, which the log cannot store.";
    REQUEST_IDEMPOTENCY_KEY_REUSED = "request.idempotency_key_reused", UNPROCESSABLE_ENTITY, "The Idempotency-Key was used before with a different request.";
    REQUEST_TOO_LARGE = "request.too_large", PAYLOAD_TOO_LARGE, "The body is larger than the API accepts (64 KiB).";
    REQUEST_UNSUPPORTED_MEDIA_TYPE = "request.unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "The body is not sent as application/json.";
    REQUEST_NO_ROUTE = "request.no_route", NOT_FOUND, "No operation at this path.";
    REQUEST_METHOD_NOT_ALLOWED = "request.method_not_allowed", METHOD_NOT_ALLOWED, "The path exists, but not with this method.";
    REQUEST_TIMEOUT = "request.timeout", REQUEST_TIMEOUT, "The request took longer than the server allows.";
    REQUEST_RATE_LIMITED = "request.rate_limited", TOO_MANY_REQUESTS, "Over the caller's command or login rate; retry after Retry-After.";
    REQUEST_CONTENTION = "request.contention", CONFLICT, "Too many concurrent changes to the same records; retrying is safe.";
    REQUEST_REFUSED = "request.refused", BAD_REQUEST, "A refusal by a layer with a status no other code covers (the status says which).";

    // Who is asking.
    AUTH_UNAUTHENTICATED = "auth.unauthenticated", UNAUTHORIZED, "No valid access token, or its account no longer exists.";
    AUTH_FORBIDDEN = "auth.forbidden", FORBIDDEN, "The caller lacks the role the operation needs.";
    AUTH_RESET_LINK_INVALID = "auth.reset_link_invalid", BAD_REQUEST, "The password-reset link is unknown, was used already or has expired.";
    AUTH_VERIFICATION_LINK_INVALID = "auth.verification_link_invalid", BAD_REQUEST, "The address-confirmation link is not one the platform made, has expired, or is for an address the account no longer has.";

    // The read side and the service.
    READ_NOT_YET_CONSISTENT = "read.not_yet_consistent", SERVICE_UNAVAILABLE, "The read models have not reached Tessera-Min-Position within the wait; retry after Retry-After.";
    SERVICE_UNAVAILABLE = "service.unavailable", SERVICE_UNAVAILABLE, "A part the request needs is not ready (for example, the search index is being built); retry after Retry-After.";
    SERVICE_BUSY = "service.busy", SERVICE_UNAVAILABLE, "Too many requests are already waiting for the same slot (its queue is full); nothing was done, retry after Retry-After.";
    PROJECTION_UNKNOWN = "projection.unknown", UNPROCESSABLE_ENTITY, "A projection name that does not exist; `errors` lists the known ones.";
    INTERNAL = "internal", INTERNAL_SERVER_ERROR, "An unexpected failure; the body is opaque, quote its request_id when reporting it.";

    // Things that do not exist, or are not the caller's.
    BOOKING_NOT_FOUND = "booking.not_found", NOT_FOUND, "No such booking, or not one the caller may see.";
    LISTING_NOT_FOUND = "listing.not_found", NOT_FOUND, "No such listing.";
    SLOT_NOT_FOUND = "slot.not_found", NOT_FOUND, "No such slot.";
    PAYMENT_NOT_FOUND = "payment.not_found", NOT_FOUND, "No such payment.";
    USER_NOT_FOUND = "user.not_found", NOT_FOUND, "No such user.";
    REFERRING_USER_NOT_FOUND = "referring_user.not_found", NOT_FOUND, "The referring user of a registration does not exist.";
    STREAM_NOT_FOUND = "stream.not_found", NOT_FOUND, "No such stream in the log.";
    METRICS_NOT_FOUND = "metrics.not_found", NOT_FOUND, "This process does not serve metrics.";
    PAYMENT_PROVIDER_NOT_FOUND = "payment_provider.not_found", NOT_FOUND, "Payments do not go through Stripe here, so there is no Stripe webhook.";
    RESOURCE_NOT_FOUND = "resource.not_found", NOT_FOUND, "Something the request names does not exist.";
    LISTING_NOT_YOURS = "listing.not_yours", FORBIDDEN, "The listing belongs to another provider.";
    SLOT_NOT_YOURS = "slot.not_yours", FORBIDDEN, "The slot's listing belongs to another provider.";
    RESOURCE_NOT_YOURS = "resource.not_yours", FORBIDDEN, "What the request names belongs to someone else.";

    // Bookings.
    BOOKING_ALREADY_PLACED = "booking.already_placed", CONFLICT, "A booking with this id already exists.";
    BOOKING_NOT_PLACED = "booking.not_placed", NOT_FOUND, "The booking does not exist.";
    BOOKING_INVALID_TRANSITION = "booking.invalid_transition", CONFLICT, "The booking's status does not allow this action.";
    BOOKING_HOLD_EXPIRED = "booking.hold_expired", CONFLICT, "The hold on the seats expired before payment.";
    BOOKING_HOLD_NOT_EXPIRED = "booking.hold_not_expired", CONFLICT, "The hold has not expired yet.";
    BOOKING_SLOT_NOT_ENDED = "booking.slot_not_ended", CONFLICT, "The slot has not ended yet.";
    BOOKING_SLOT_STARTED = "booking.slot_started", CONFLICT, "The slot has already started.";
    BOOKING_INVALID_HOLD_TTL = "booking.invalid_hold_ttl", CONFLICT, "The hold time must be positive.";
    BOOKING_WRONG_PAYMENT = "booking.wrong_payment", CONFLICT, "The payment is not this booking's.";
    BOOKING_AMOUNT_MISMATCH = "booking.amount_mismatch", CONFLICT, "The amount paid is not the booking's total.";
    BOOKING_REFUND_EXCEEDS_PAID = "booking.refund_exceeds_paid", CONFLICT, "The refund would exceed what was paid.";
    BOOKING_EMPTY_REFUND = "booking.empty_refund", UNPROCESSABLE_ENTITY, "A refund amount must be positive.";
    BOOKING_SLOT_ENDED = "booking.slot_ended", CONFLICT, "The booking's slot has ended.";
    BOOKING_ATTENDED = "booking.attended", CONFLICT, "A ticket of the booking was checked in: it is not a no-show, and it cannot move to another slot.";
    BOOKING_SAME_SLOT = "booking.same_slot", UNPROCESSABLE_ENTITY, "The booking is already on that slot.";
    BOOKING_OTHER_LISTING = "booking.other_listing", UNPROCESSABLE_ENTITY, "A booking moves only to another slot of its own listing.";
    BOOKING_NOT_MOVABLE = "booking.not_movable", CONFLICT, "The booking's cancellation policy refunds nothing, so it cannot be moved to another slot.";
    BOOKING_RESCHEDULE_CLOSED = "booking.reschedule_closed", CONFLICT, "A booking can be moved only while its cancellation policy still refunds something (the detail says until when).";
    BOOKING_RESCHEDULE_COSTS_MORE = "booking.reschedule_costs_more", CONFLICT, "The new slot costs more than the booking, and an admin's move cannot charge the customer: the customer moves it and pays the difference (the detail says how much more).";
    BOOKING_MOVE_PENDING = "booking.move_pending", CONFLICT, "A move to a dearer slot already waits for its payment (the detail says until when); pay it or let it lapse first.";
    BOOKING_NO_PENDING_MOVE = "booking.no_pending_move", CONFLICT, "No move of the booking waits for that payment.";
    BOOKING_MOVE_NOT_EXPIRED = "booking.move_not_expired", CONFLICT, "The pending move has not lapsed yet.";
    // Tickets and check-in at the door.
    TICKET_FORGED = "ticket.forged", UNPROCESSABLE_ENTITY, "The ticket's token is malformed or its signature does not hold: not a ticket this platform issued.";
    TICKET_ALREADY_CHECKED_IN = "ticket.already_checked_in", CONFLICT, "The ticket was already checked in (the detail says when and by whom).";
    TICKET_WRONG_SLOT = "ticket.wrong_slot", CONFLICT, "The ticket is for another slot.";
    TICKET_NOT_VALID = "ticket.not_valid", CONFLICT, "The ticket's booking is not confirmed (cancelled, refunded, expired, completed or a no-show).";
    TICKET_NO_SUCH_SEAT = "ticket.no_such_seat", CONFLICT, "The booking has no such seat.";
    TICKET_CHECK_IN_NOT_OPEN = "ticket.check_in_not_open", CONFLICT, "Check-in opens 24 hours before the slot starts.";
    TICKET_NOT_CONFIRMED = "ticket.not_confirmed", CONFLICT, "Only a confirmed (or completed) booking has tickets.";
    BOOKING_VALUE = "booking.value", UNPROCESSABLE_ENTITY, "An amount, currency or seat count is not valid.";

    // Slots.
    SLOT_ALREADY_SCHEDULED = "slot.already_scheduled", CONFLICT, "A slot with this id already exists.";
    SLOT_NOT_SCHEDULED = "slot.not_scheduled", NOT_FOUND, "The slot does not exist.";
    SLOT_CANCELLED = "slot.cancelled", CONFLICT, "The slot is cancelled.";
    SLOT_STARTED = "slot.started", CONFLICT, "The slot has already started.";
    SLOT_INVALID_TIMES = "slot.invalid_times", UNPROCESSABLE_ENTITY, "A slot must end after it starts.";
    SLOT_INVALID_CAPACITY = "slot.invalid_capacity", UNPROCESSABLE_ENTITY, "Capacity must be between 1 and 10,000.";
    SLOT_CAPACITY_BELOW_TAKEN = "slot.capacity_below_taken", CONFLICT, "Capacity cannot drop below the seats already taken.";
    SLOT_HAS_BOOKINGS = "slot.has_bookings", CONFLICT, "Bookings hold seats on the slot.";
    SLOT_WRONG_CURRENCY = "slot.wrong_currency", UNPROCESSABLE_ENTITY, "A slot is priced in its listing's currency.";
    SLOT_SOLD_OUT = "slot.sold_out", CONFLICT, "Fewer seats remain than were requested.";
    SLOT_ALREADY_HOLDING = "slot.already_holding", CONFLICT, "The booking already holds seats on this slot.";
    SLOT_NOT_HOLDING = "slot.not_holding", CONFLICT, "The booking holds no seats on this slot.";
    SLOT_ALREADY_CONFIRMED = "slot.already_confirmed", CONFLICT, "The booking's seats are already confirmed.";

    // Listings.
    LISTING_ALREADY_PUBLISHED = "listing.already_published", CONFLICT, "A listing with this id already exists.";
    LISTING_NOT_PUBLISHED = "listing.not_published", NOT_FOUND, "The listing does not exist.";
    LISTING_RETIRED = "listing.retired", CONFLICT, "The listing is retired.";
    LISTING_INVALID = "listing.invalid", UNPROCESSABLE_ENTITY, "The listing's details are not valid.";

    // Payments.
    PAYMENT_ALREADY_CREATED = "payment.already_created", CONFLICT, "A payment with this id already exists.";
    PAYMENT_NOT_CREATED = "payment.not_created", CONFLICT, "The payment does not exist.";
    PAYMENT_NOT_PENDING = "payment.not_pending", CONFLICT, "The payment is no longer pending.";
    PAYMENT_NOT_SUCCEEDED = "payment.not_succeeded", CONFLICT, "Only a succeeded payment can be refunded.";
    PAYMENT_REFUND_EXCEEDS_PAID = "payment.refund_exceeds_paid", CONFLICT, "Refunds would exceed what was paid.";
    PAYMENT_INVALID_REFUND = "payment.invalid_refund", CONFLICT, "A refund must be positive and in the payment's currency.";
    PAYMENT_UNKNOWN_REFUND = "payment.unknown_refund", CONFLICT, "No such refund on this payment.";
    PAYMENT_REFUND_FINISHED = "payment.refund_finished", CONFLICT, "The refund already finished.";
    PAYMENT_DUPLICATE_REFUND = "payment.duplicate_refund", CONFLICT, "The refund was already requested.";
    PAYMENT_ALREADY_RELEASED = "payment.already_released", CONFLICT, "The provider's share of this payment was already released.";
    PAYMENT_NOT_RELEASED = "payment.not_released", CONFLICT, "The provider's share of this payment is still held.";
    PAYMENT_NOTHING_TO_RELEASE = "payment.nothing_to_release", CONFLICT, "Everything paid is refunded or being refunded: nothing is left to release.";
    PAYMENT_NOTHING_TO_TRANSFER = "payment.nothing_to_transfer", CONFLICT, "Nothing is due to the provider.";
    PAYMENT_NOTHING_TO_REVERSE = "payment.nothing_to_reverse", CONFLICT, "The provider has nothing to give back.";
    PAYMENT_TRANSFER_UNDER_WAY = "payment.transfer_under_way", CONFLICT, "A transfer or reversal of this payment is under way.";
    PAYMENT_NOT_UNDER_WAY = "payment.not_under_way", CONFLICT, "That transfer or reversal is not the one under way.";
    PAYMENT_DOCUMENT_ISSUED = "payment.document_issued", CONFLICT, "The receipt or credit note is already issued.";
    PAYMENT_NOTHING_TO_DOCUMENT = "payment.nothing_to_document", CONFLICT, "Only a succeeded payment has a receipt, and only a succeeded refund a credit note.";
    PROVIDER_ACCOUNT_EXISTS = "provider.account_exists", CONFLICT, "The provider already has a payout account.";
    PROVIDER_NO_ACCOUNT = "provider.no_account", CONFLICT, "The provider has no payout account yet.";
    PROVIDER_WRONG_ACCOUNT = "provider.wrong_account", CONFLICT, "The gateway's account is not this provider's.";
    PROVIDER_COMMISSION_OUT_OF_RANGE = "provider.commission_out_of_range", UNPROCESSABLE_ENTITY, "A commission is between 0 and 5,000 basis points (50 %).";
    PROVIDER_COMMISSION_UNCHANGED = "provider.commission_unchanged", CONFLICT, "The provider's commission already has this value.";
    PROVIDER_STATUS_UNCHANGED = "provider.status_unchanged", CONFLICT, "The payout account already has this status.";
    PROVIDER_NOTHING_TO_INVOICE = "provider.nothing_to_invoice", CONFLICT, "No commission accrued in that month.";
    PROVIDER_ALREADY_INVOICED = "provider.already_invoiced", CONFLICT, "That month is already invoiced.";
    PROVIDER_NOT_A_MONTH = "provider.not_a_month", UNPROCESSABLE_ENTITY, "A month is written YYYY-MM.";
    PROVIDER_TOO_MANY_STAFF = "provider.too_many_staff", CONFLICT, "A provider has at most 200 door staff.";
    PROVIDER_STAFF_IS_PROVIDER = "provider.staff_is_provider", CONFLICT, "A provider checks tickets in at their own doors without being their own staff.";
    PAYMENT_REFUSED = "payment.refused", PAYMENT_REQUIRED, "The payment provider refused the payment (for example, the card was declined).";
    PAYMENT_GATEWAY_UNAVAILABLE = "payment.gateway_unavailable", SERVICE_UNAVAILABLE, "The payment provider could not be reached; retrying is safe.";
    PAYMENT_SIGNATURE_MISSING = "payment.signature_missing", BAD_REQUEST, "A webhook without its Stripe-Signature header.";
    PAYMENT_INVALID_WEBHOOK = "payment.invalid_webhook", BAD_REQUEST, "A webhook whose signature, age or payload does not verify.";

    // Loyalty.
    LOYALTY_ALREADY_AWARDED = "loyalty.already_awarded", CONFLICT, "Points for this source were already awarded.";
    LOYALTY_INSUFFICIENT_POINTS = "loyalty.insufficient_points", CONFLICT, "The balance is lower than the points needed.";
    LOYALTY_NON_POSITIVE = "loyalty.non_positive", UNPROCESSABLE_ENTITY, "Points must be positive.";
    LOYALTY_EMPTY_ADJUSTMENT = "loyalty.empty_adjustment", UNPROCESSABLE_ENTITY, "An adjustment of zero changes nothing.";
    LOYALTY_NOTHING_TO_REVERSE = "loyalty.nothing_to_reverse", CONFLICT, "The booking awarded no points to reverse.";
    LOYALTY_ADJUSTMENT_OUT_OF_RANGE = "loyalty.adjustment_out_of_range", UNPROCESSABLE_ENTITY, "An adjustment is at most 10^9 points either way.";

    // Reviews.
    REVIEW_ALREADY_REVIEWED = "review.already_reviewed", CONFLICT, "The booking already has a review.";
    REVIEW_RATING = "review.rating", UNPROCESSABLE_ENTITY, "A rating is 1 to 5 stars.";
    REVIEW_TOO_LONG = "review.too_long", UNPROCESSABLE_ENTITY, "The review text is too long.";

    // Users.
    USER_ALREADY_REGISTERED = "user.already_registered", CONFLICT, "A user with this id already exists.";
    USER_NOT_REGISTERED = "user.not_registered", NOT_FOUND, "The user does not exist.";
    USER_ERASED = "user.erased", CONFLICT, "The user was erased.";
    USER_INVALID_EMAIL = "user.invalid_email", UNPROCESSABLE_ENTITY, "Not a valid e-mail address.";
    USER_EMAIL_TAKEN = "user.email_taken", CONFLICT, "An account with this e-mail address already exists.";
    USER_WEAK_PASSWORD = "user.weak_password", UNPROCESSABLE_ENTITY, "A password needs 10 to 256 characters.";
    USER_SELF_REFERRAL = "user.self_referral", UNPROCESSABLE_ENTITY, "A user cannot refer themselves.";
    USER_BAD_CREDENTIALS = "user.bad_credentials", UNAUTHORIZED, "Wrong e-mail or password.";
    USER_INVALID_DISPLAY_NAME = "user.invalid_display_name", UNPROCESSABLE_ENTITY, "A display name has 1 to 100 characters.";
    USER_HAS_ROLE = "user.has_role", CONFLICT, "The user already has the role.";
    USER_LACKS_ROLE = "user.lacks_role", CONFLICT, "The user does not have the role.";
    USER_SELF_REMOVAL = "user.self_removal", CONFLICT, "An admin cannot erase themselves or give up their own admin role.";
    USER_LAST_ADMIN = "user.last_admin", CONFLICT, "This would leave the platform without an admin.";
    USER_INVALID_PHONE = "user.invalid_phone", UNPROCESSABLE_ENTITY, "A phone number is `+` and 6 to 15 digits.";
    USER_SUSPENDED = "user.suspended", FORBIDDEN, "The account is suspended.";
    USER_ALREADY_SUSPENDED = "user.already_suspended", CONFLICT, "The user is already suspended.";
    USER_NOT_SUSPENDED = "user.not_suspended", CONFLICT, "The user is not suspended.";
    USER_WRONG_PASSWORD = "user.wrong_password", UNPROCESSABLE_ENTITY, "The current password is wrong.";
    USER_WISHLIST_FULL = "user.wishlist_full", CONFLICT, "A wishlist holds at most 500 listings.";
    USER_REASON_REQUIRED = "user.reason_required", UNPROCESSABLE_ENTITY, "A suspension needs a reason.";
    USER_EMAIL_UNVERIFIED = "user.email_unverified", FORBIDDEN, "Paying needs a confirmed e-mail address: open the link sent to it (POST /me/email/verification sends a new one).";
    USER_ALREADY_VERIFIED = "user.already_verified", CONFLICT, "The account's e-mail address is already confirmed.";

    // Messages.
    MESSAGE_NOT_FOUND = "message.not_found", NOT_FOUND, "No message with this id is in the outbox.";
    MESSAGE_WRONG_STATE = "message.wrong_state", CONFLICT, "Only a dead or discarded message can be retried, and only a pending or dead one discarded (an erased recipient's never).";
    UNSUBSCRIBE_INVALID_LINK = "unsubscribe.invalid_link", NOT_FOUND, "The unsubscribe link is not one the platform made.";

    // Webhooks.
    WEBHOOK_NOT_FOUND = "webhook.not_found", NOT_FOUND, "No such webhook endpoint or delivery (or not the caller's).";
    WEBHOOK_NOT_DISABLED = "webhook.not_disabled", CONFLICT, "Only a disabled endpoint can be enabled.";
    // Recurring schedules.
    SCHEDULE_NOT_FOUND = "schedule.not_found", NOT_FOUND, "No such schedule.";
    SCHEDULE_NOT_YOURS = "schedule.not_yours", FORBIDDEN, "The schedule belongs to another provider.";
    SCHEDULE_ALREADY_DEFINED = "schedule.already_defined", CONFLICT, "A schedule with this id already exists.";
    SCHEDULE_ENDED = "schedule.ended", CONFLICT, "The schedule has ended.";
    SCHEDULE_INVALID_RULE = "schedule.invalid_rule", UNPROCESSABLE_ENTITY, "The recurrence rule, its start or its time zone is not valid.";
    SCHEDULE_INVALID = "schedule.invalid", UNPROCESSABLE_ENTITY, "The schedule's slot length, capacity, price or horizon is out of range.";
    SCHEDULE_ALREADY_EXCEPTION = "schedule.already_exception", CONFLICT, "The date is already taken out of the schedule.";
    SCHEDULE_NOT_EXCEPTION = "schedule.not_exception", CONFLICT, "The date is not taken out of the schedule.";
    SCHEDULE_OCCURRENCE_BOOKED = "schedule.occurrence_booked", CONFLICT, "The slot on that date has bookings: cancel it explicitly, which refunds them.";
}

/// The code of something that does not exist, by what the error names.
pub fn not_found(what: &str) -> &'static Code {
    match what {
        "booking" => &BOOKING_NOT_FOUND,
        "listing" => &LISTING_NOT_FOUND,
        "slot" => &SLOT_NOT_FOUND,
        "schedule" => &SCHEDULE_NOT_FOUND,
        "payment" => &PAYMENT_NOT_FOUND,
        "user" => &USER_NOT_FOUND,
        "referring user" => &REFERRING_USER_NOT_FOUND,
        "stream" => &STREAM_NOT_FOUND,
        "metrics" => &METRICS_NOT_FOUND,
        "payment_provider" => &PAYMENT_PROVIDER_NOT_FOUND,
        "message" => &MESSAGE_NOT_FOUND,
        "webhook endpoint" | "webhook delivery" => &WEBHOOK_NOT_FOUND,
        _ => &RESOURCE_NOT_FOUND,
    }
}

/// The code of something that belongs to someone else, by what the error names.
pub fn not_yours(what: &str) -> &'static Code {
    match what {
        "listing" => &LISTING_NOT_YOURS,
        "slot" => &SLOT_NOT_YOURS,
        "schedule" => &SCHEDULE_NOT_YOURS,
        _ => &RESOURCE_NOT_YOURS,
    }
}

/// The published code with this name.
pub fn find(code: &str) -> Option<&'static Code> {
    ALL.iter().find(|c| c.code == code)
}

/// `docs/errors.md`: the table of every published code.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         Every problem response (`application/problem+json`, RFC 9457) carries one of these codes \
         in `code`, and `urn:tessera:problem:<code>` in `type`. Codes are stable: they are never \
         renamed or removed (a test fails if one is). Generated from `api/src/http/codes.rs`; \
         the OpenAPI document lists the same codes (`Problem.code` and `x-error-codes`).\n\n\
         | code | status | title | meaning |\n|---|---|---|---|\n",
    );
    for c in ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.code,
            c.status.as_u16(),
            c.title(),
            c.meaning
        ));
    }
    out
}

/// The table as the OpenAPI extension `x-error-codes`.
pub fn openapi() -> serde_json::Value {
    serde_json::Value::Array(
        ALL.iter()
            .map(|c| {
                serde_json::json!({
                    "code": c.code,
                    "status": c.status.as_u16(),
                    "title": c.title(),
                    "meaning": c.meaning,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn docs() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/errors.md"))
            .expect("docs/errors.md")
    }

    /// The golden test: every code docs/errors.md publishes is still in the table, with the
    /// same status; and the document is exactly what the table generates.
    #[test]
    fn published_codes_never_change_or_disappear() {
        let published = docs();
        let mut missing = Vec::new();
        for line in published.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells[1].trim_matches('`');
            let status: u16 = cells[2].parse().expect("a status");
            match find(code) {
                Some(c) if c.status.as_u16() == status => {}
                Some(c) => missing.push(format!("{code}: {status} became {}", c.status)),
                None => missing.push(format!("{code}: removed")),
            }
        }
        assert!(
            missing.is_empty(),
            "published error codes are never renamed, removed or given another status: {missing:#?}"
        );
        assert!(
            published == markdown(),
            "docs/errors.md is not what api/src/http/codes.rs generates; replace it with:\n{}",
            markdown()
        );
    }

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = BTreeSet::new();
        for c in ALL {
            assert!(seen.insert(c.code), "{} is listed twice", c.code);
            assert!(
                c.code
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_' || ch == '.'),
                "{} is not snake_case with dots",
                c.code
            );
            assert!(
                c.status.is_client_error() || c.status.is_server_error(),
                "{}: {} is not an error status",
                c.code,
                c.status
            );
        }
    }
}
