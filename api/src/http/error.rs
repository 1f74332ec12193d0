//! The one place where errors become HTTP responses: RFC 9457 problem details
//! (`application/problem+json`) with a stable machine-readable `code`, field-level messages for
//! validation failures, and opaque bodies for server errors (logged once, with the request id).

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tessera_commands::error::CommandError;
use tessera_domain::booking::BookingError;
use tessera_domain::listing::ListingError;
use tessera_domain::loyalty::LoyaltyError;
use tessera_domain::payment::PaymentError;
use tessera_domain::provider::ProviderError;
use tessera_domain::review::ReviewError;
use tessera_domain::schedule::ScheduleError;
use tessera_domain::slot::SlotError;
use tessera_domain::user::UserError;
use tessera_projections::ProjectionError;
use utoipa::ToSchema;

use super::codes::{self, Code};

tokio::task_local! {
    /// The id of the request being served (set by the request-context middleware).
    pub static REQUEST_ID: String;
}

/// The request id of the current request, if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as a JSON path (`seats`, `destination.lat`); empty for the whole body.
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem details body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`urn:tessera:problem:<code>`).
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code, e.g. `slot.sold_out`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Whether the same request may succeed if retried later.
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("the request is invalid")]
    Invalid(Vec<FieldError>),
    #[error("{detail}")]
    BadRequest { code: &'static Code, detail: String },
    #[error("{detail}")]
    Conflict { code: &'static Code, detail: String },
    #[error("too many requests; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error(
        "the read models have not reached position {wanted} yet ({projection} is at {at}); retry shortly"
    )]
    NotYetConsistent {
        projection: String,
        at: i64,
        wanted: i64,
    },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{0}")]
    Unavailable(String),
    #[error("no route {0}")]
    NoRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("internal error: {0}")]
    Internal(String),
    /// An error answered outside our own types (an extractor or layer), kept with its status.
    #[error("{detail}")]
    Status {
        status: StatusCode,
        code: &'static Code,
        detail: String,
    },
}

impl ApiError {
    /// The problem for an error response some layer or extractor produced as plain text.
    pub fn from_status(status: StatusCode, text: String) -> Self {
        use StatusCode as S;
        let detail = text.trim().chars().take(500).collect::<String>();
        match status {
            S::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge {
                limit: super::BODY_LIMIT,
            },
            S::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            S::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            S::SERVICE_UNAVAILABLE => Self::Unavailable(detail),
            s if s.is_server_error() => Self::Internal(detail),
            s => Self::Status {
                status: s,
                code: match s {
                    S::BAD_REQUEST => &codes::REQUEST_BAD_REQUEST,
                    S::UNAUTHORIZED => &codes::AUTH_UNAUTHENTICATED,
                    S::FORBIDDEN => &codes::AUTH_FORBIDDEN,
                    S::NOT_FOUND => &codes::REQUEST_NO_ROUTE,
                    S::REQUEST_TIMEOUT => &codes::REQUEST_TIMEOUT,
                    S::UNPROCESSABLE_ENTITY => &codes::REQUEST_INVALID,
                    S::TOO_MANY_REQUESTS => &codes::REQUEST_RATE_LIMITED,
                    _ => &codes::REQUEST_REFUSED,
                },
                detail: if detail.is_empty() {
                    s.canonical_reason().unwrap_or("refused").to_owned()
                } else {
                    detail
                },
            },
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(format!("database: {e}"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(format!("{e:#}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                // serde's message names the field and the path (`seats: invalid type …`).
                let text = std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text());
                let (field, message) = match text.split_once(": ") {
                    Some((path, msg)) if !path.contains(' ') => (path.to_owned(), msg.to_owned()),
                    _ => (String::new(), text),
                };
                Self::Invalid(vec![FieldError { field, message }])
            }
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest {
                code: &codes::REQUEST_MALFORMED_JSON,
                detail: std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text()),
            },
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge {
                limit: super::BODY_LIMIT,
            },
            other => Self::BadRequest {
                code: &codes::REQUEST_UNREADABLE_BODY,
                detail: other.body_text(),
            },
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::BadRequest {
            code: &codes::REQUEST_INVALID_PATH,
            detail: r.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::BadRequest {
            code: &codes::REQUEST_INVALID_QUERY,
            detail: r.body_text(),
        }
    }
}

struct Mapped {
    code: &'static Code,
    /// The status answered: the code's, except for a layer's refusal kept with its own status.
    status: StatusCode,
    retryable: bool,
    errors: Vec<FieldError>,
}

fn mapped(code: &'static Code) -> Mapped {
    Mapped {
        code,
        status: code.status,
        retryable: false,
        errors: Vec::new(),
    }
}

fn with_field(code: &'static Code, field: &str, message: String) -> Mapped {
    Mapped {
        errors: vec![FieldError {
            field: field.to_owned(),
            message,
        }],
        ..mapped(code)
    }
}

fn retryable(code: &'static Code) -> Mapped {
    Mapped {
        retryable: true,
        ..mapped(code)
    }
}

fn booking(e: &BookingError) -> &'static Code {
    use BookingError as E;
    match e {
        E::AlreadyPlaced => &codes::BOOKING_ALREADY_PLACED,
        E::NotPlaced => &codes::BOOKING_NOT_PLACED,
        E::InvalidTransition { .. } => &codes::BOOKING_INVALID_TRANSITION,
        E::HoldExpired(_) => &codes::BOOKING_HOLD_EXPIRED,
        E::HoldNotExpired(_) => &codes::BOOKING_HOLD_NOT_EXPIRED,
        E::SlotNotEnded(_) => &codes::BOOKING_SLOT_NOT_ENDED,
        E::SlotStarted => &codes::BOOKING_SLOT_STARTED,
        E::InvalidHoldTtl => &codes::BOOKING_INVALID_HOLD_TTL,
        E::WrongPayment { .. } => &codes::BOOKING_WRONG_PAYMENT,
        E::AmountMismatch { .. } => &codes::BOOKING_AMOUNT_MISMATCH,
        E::RefundExceedsPaid { .. } => &codes::BOOKING_REFUND_EXCEEDS_PAID,
        E::EmptyRefund => &codes::BOOKING_EMPTY_REFUND,
        E::Value(_) => &codes::BOOKING_VALUE,
        E::AlreadyCheckedIn { .. } => &codes::TICKET_ALREADY_CHECKED_IN,
        E::WrongSlot { .. } => &codes::TICKET_WRONG_SLOT,
        E::NoSuchSeat(_) => &codes::TICKET_NO_SUCH_SEAT,
        E::CheckInNotOpen(_) => &codes::TICKET_CHECK_IN_NOT_OPEN,
        E::SlotEnded(_) => &codes::BOOKING_SLOT_ENDED,
        E::Attended => &codes::BOOKING_ATTENDED,
        E::SameSlot => &codes::BOOKING_SAME_SLOT,
        E::OtherListing => &codes::BOOKING_OTHER_LISTING,
        E::NotMovable => &codes::BOOKING_NOT_MOVABLE,
        E::RescheduleClosed(_) => &codes::BOOKING_RESCHEDULE_CLOSED,
        E::RescheduleCostsMore { .. } => &codes::BOOKING_RESCHEDULE_COSTS_MORE,
        E::MovePending { .. } => &codes::BOOKING_MOVE_PENDING,
        E::NoPendingMove => &codes::BOOKING_NO_PENDING_MOVE,
        E::MoveNotExpired(_) => &codes::BOOKING_MOVE_NOT_EXPIRED,
    }
}

fn slot(e: &SlotError) -> &'static Code {
    use SlotError as E;
    match e {
        E::AlreadyScheduled => &codes::SLOT_ALREADY_SCHEDULED,
        E::NotScheduled => &codes::SLOT_NOT_SCHEDULED,
        E::Cancelled => &codes::SLOT_CANCELLED,
        E::Started => &codes::SLOT_STARTED,
        E::InvalidTimes => &codes::SLOT_INVALID_TIMES,
        E::InvalidCapacity => &codes::SLOT_INVALID_CAPACITY,
        E::CapacityBelowTaken { .. } => &codes::SLOT_CAPACITY_BELOW_TAKEN,
        E::SoldOut { .. } => &codes::SLOT_SOLD_OUT,
        E::WrongCurrency { .. } => &codes::SLOT_WRONG_CURRENCY,
        E::HasBookings => &codes::SLOT_HAS_BOOKINGS,
        E::AlreadyHolding(_) => &codes::SLOT_ALREADY_HOLDING,
        E::NotHolding(_) => &codes::SLOT_NOT_HOLDING,
        E::AlreadyConfirmed(_) => &codes::SLOT_ALREADY_CONFIRMED,
    }
}

fn listing(e: &ListingError) -> &'static Code {
    use ListingError as E;
    match e {
        E::AlreadyPublished => &codes::LISTING_ALREADY_PUBLISHED,
        E::NotPublished => &codes::LISTING_NOT_PUBLISHED,
        E::Retired => &codes::LISTING_RETIRED,
        E::Invalid(_) => &codes::LISTING_INVALID,
    }
}

fn payment(e: &PaymentError) -> &'static Code {
    use PaymentError as E;
    match e {
        E::AlreadyCreated => &codes::PAYMENT_ALREADY_CREATED,
        E::NotCreated => &codes::PAYMENT_NOT_CREATED,
        E::NotPending(_) => &codes::PAYMENT_NOT_PENDING,
        E::NotSucceeded => &codes::PAYMENT_NOT_SUCCEEDED,
        E::RefundExceedsPaid { .. } => &codes::PAYMENT_REFUND_EXCEEDS_PAID,
        E::InvalidRefund => &codes::PAYMENT_INVALID_REFUND,
        E::UnknownRefund(_) => &codes::PAYMENT_UNKNOWN_REFUND,
        E::RefundFinished(_) => &codes::PAYMENT_REFUND_FINISHED,
        E::DuplicateRefund(_) => &codes::PAYMENT_DUPLICATE_REFUND,
        E::AlreadyReleased => &codes::PAYMENT_ALREADY_RELEASED,
        E::NotReleased => &codes::PAYMENT_NOT_RELEASED,
        E::NothingToRelease => &codes::PAYMENT_NOTHING_TO_RELEASE,
        E::NothingToTransfer => &codes::PAYMENT_NOTHING_TO_TRANSFER,
        E::NothingToReverse => &codes::PAYMENT_NOTHING_TO_REVERSE,
        E::TransferUnderWay => &codes::PAYMENT_TRANSFER_UNDER_WAY,
        E::NotUnderWay(_) => &codes::PAYMENT_NOT_UNDER_WAY,
        E::AlreadyIssued(_) => &codes::PAYMENT_DOCUMENT_ISSUED,
        E::NothingToDocument => &codes::PAYMENT_NOTHING_TO_DOCUMENT,
    }
}

fn provider(e: &ProviderError) -> Mapped {
    use ProviderError as E;
    match e {
        E::AccountExists => mapped(&codes::PROVIDER_ACCOUNT_EXISTS),
        E::NoAccount => mapped(&codes::PROVIDER_NO_ACCOUNT),
        E::WrongAccount { .. } => mapped(&codes::PROVIDER_WRONG_ACCOUNT),
        E::CommissionOutOfRange => with_field(
            &codes::PROVIDER_COMMISSION_OUT_OF_RANGE,
            "commission_bp",
            e.to_string(),
        ),
        E::CommissionUnchanged(_) => mapped(&codes::PROVIDER_COMMISSION_UNCHANGED),
        E::StatusUnchanged(_) => mapped(&codes::PROVIDER_STATUS_UNCHANGED),
        E::NothingToInvoice(_) => mapped(&codes::PROVIDER_NOTHING_TO_INVOICE),
        E::AlreadyInvoiced(_) => mapped(&codes::PROVIDER_ALREADY_INVOICED),
        E::NotAMonth(_) => mapped(&codes::PROVIDER_NOT_A_MONTH),
        E::TooManyStaff => mapped(&codes::PROVIDER_TOO_MANY_STAFF),
        E::StaffIsProvider => mapped(&codes::PROVIDER_STAFF_IS_PROVIDER),
    }
}

fn loyalty(e: &LoyaltyError) -> Mapped {
    use LoyaltyError as E;
    match e {
        E::AlreadyAwarded(_) => mapped(&codes::LOYALTY_ALREADY_AWARDED),
        E::InsufficientPoints { .. } => mapped(&codes::LOYALTY_INSUFFICIENT_POINTS),
        E::NonPositive => mapped(&codes::LOYALTY_NON_POSITIVE),
        E::EmptyAdjustment => mapped(&codes::LOYALTY_EMPTY_ADJUSTMENT),
        E::NothingToReverse(_) => mapped(&codes::LOYALTY_NOTHING_TO_REVERSE),
        E::AdjustmentOutOfRange { .. } => with_field(
            &codes::LOYALTY_ADJUSTMENT_OUT_OF_RANGE,
            "delta",
            e.to_string(),
        ),
    }
}

fn review(e: &ReviewError) -> &'static Code {
    use ReviewError as E;
    match e {
        E::AlreadyReviewed => &codes::REVIEW_ALREADY_REVIEWED,
        E::Rating(_) => &codes::REVIEW_RATING,
        E::TooLong => &codes::REVIEW_TOO_LONG,
    }
}

fn user(e: &UserError) -> Mapped {
    use UserError as E;
    let field = |code, field| with_field(code, field, e.to_string());
    match e {
        E::AlreadyRegistered => mapped(&codes::USER_ALREADY_REGISTERED),
        E::NotRegistered => mapped(&codes::USER_NOT_REGISTERED),
        E::Erased => mapped(&codes::USER_ERASED),
        E::InvalidEmail => field(&codes::USER_INVALID_EMAIL, "email"),
        E::EmailTaken => mapped(&codes::USER_EMAIL_TAKEN),
        E::WeakPassword => field(&codes::USER_WEAK_PASSWORD, "password"),
        E::SelfReferral => field(&codes::USER_SELF_REFERRAL, "referred_by"),
        E::BadCredentials => mapped(&codes::USER_BAD_CREDENTIALS),
        E::InvalidDisplayName => field(&codes::USER_INVALID_DISPLAY_NAME, "display_name"),
        E::HasRole(_) => mapped(&codes::USER_HAS_ROLE),
        E::LacksRole(_) => mapped(&codes::USER_LACKS_ROLE),
        E::SelfRemoval => mapped(&codes::USER_SELF_REMOVAL),
        E::LastAdmin => mapped(&codes::USER_LAST_ADMIN),
        E::InvalidPhone => field(&codes::USER_INVALID_PHONE, "phone"),
        E::Suspended => mapped(&codes::USER_SUSPENDED),
        E::AlreadySuspended => mapped(&codes::USER_ALREADY_SUSPENDED),
        E::NotSuspended => mapped(&codes::USER_NOT_SUSPENDED),
        E::ReasonRequired => field(&codes::USER_REASON_REQUIRED, "reason"),
        E::WrongPassword => field(&codes::USER_WRONG_PASSWORD, "current_password"),
        E::WishlistFull => mapped(&codes::USER_WISHLIST_FULL),
        E::EmailUnverified => mapped(&codes::USER_EMAIL_UNVERIFIED),
        E::AlreadyVerified => mapped(&codes::USER_ALREADY_VERIFIED),
        E::VerificationStale => mapped(&codes::AUTH_VERIFICATION_LINK_INVALID),
    }
}

fn schedule(e: &ScheduleError) -> Mapped {
    use ScheduleError as E;
    match e {
        E::AlreadyDefined => mapped(&codes::SCHEDULE_ALREADY_DEFINED),
        E::NotDefined => mapped(&codes::SCHEDULE_NOT_FOUND),
        E::Ended => mapped(&codes::SCHEDULE_ENDED),
        E::InvalidRule(why) => with_field(&codes::SCHEDULE_INVALID_RULE, "rrule", why.clone()),
        E::Invalid(why) => with_field(&codes::SCHEDULE_INVALID, "", (*why).to_owned()),
        E::AlreadyException(_) => mapped(&codes::SCHEDULE_ALREADY_EXCEPTION),
        E::NotException(_) => mapped(&codes::SCHEDULE_NOT_EXCEPTION),
        E::OccurrenceBooked(_) => mapped(&codes::SCHEDULE_OCCURRENCE_BOOKED),
    }
}

fn command(e: &CommandError) -> Mapped {
    match e {
        CommandError::Booking(b) => mapped(booking(b)),
        CommandError::Slot(s) => mapped(slot(s)),
        CommandError::Listing(l) => mapped(listing(l)),
        CommandError::Payment(p) => mapped(payment(p)),
        CommandError::Provider(p) => provider(p),
        CommandError::Loyalty(l) => loyalty(l),
        CommandError::Review(r) => mapped(review(r)),
        CommandError::Schedule(s) => schedule(s),
        CommandError::User(u) => user(u),
        CommandError::NotFound { what, .. } => mapped(codes::not_found(what)),
        CommandError::NotYours { what } => mapped(codes::not_yours(what)),
        CommandError::ReasonRequired => with_field(
            &codes::REQUEST_REASON_REQUIRED,
            "reason",
            "a reason is required".into(),
        ),
        CommandError::PaymentRefused(_) => mapped(&codes::PAYMENT_REFUSED),
        CommandError::GatewayUnavailable(_) => retryable(&codes::PAYMENT_GATEWAY_UNAVAILABLE),
        CommandError::IdempotencyKeyReused => mapped(&codes::REQUEST_IDEMPOTENCY_KEY_REUSED),
        CommandError::Contention { .. } => retryable(&codes::REQUEST_CONTENTION),
        CommandError::Busy(_) => retryable(&codes::SERVICE_BUSY),
        CommandError::Store(tessera_log::store::StoreError::UnstorableText { what, .. }) => {
            with_field(
                &codes::REQUEST_UNSTORABLE_TEXT,
                what,
                "must not contain U+0000 (NUL)".into(),
            )
        }
        CommandError::Codec(_) | CommandError::Store(_) | CommandError::Idempotency(_) => {
            mapped(&codes::INTERNAL)
        }
    }
}

impl ApiError {
    fn mapped(&self) -> Mapped {
        match self {
            Self::Command(e) => command(e),
            Self::Projection(ProjectionError::Invalid(m)) => {
                with_field(&codes::REQUEST_INVALID, "", m.clone())
            }
            Self::Projection(ProjectionError::Unknown(name, known)) => with_field(
                &codes::PROJECTION_UNKNOWN,
                "names",
                format!("unknown projection {name:?}; known: {known}"),
            ),
            Self::Projection(ProjectionError::NotReady(_)) => {
                retryable(&codes::SERVICE_UNAVAILABLE)
            }
            Self::Projection(_) => mapped(&codes::INTERNAL),
            Self::Unauthenticated(_) => mapped(&codes::AUTH_UNAUTHENTICATED),
            Self::Forbidden(_) => mapped(&codes::AUTH_FORBIDDEN),
            Self::NotFound { what, .. } => mapped(codes::not_found(what)),
            Self::Invalid(errors) => Mapped {
                errors: errors.clone(),
                ..mapped(&codes::REQUEST_INVALID)
            },
            Self::BadRequest { code, .. } | Self::Conflict { code, .. } => mapped(code),
            Self::RateLimited { .. } => retryable(&codes::REQUEST_RATE_LIMITED),
            Self::NotYetConsistent { .. } => retryable(&codes::READ_NOT_YET_CONSISTENT),
            Self::PayloadTooLarge { .. } => mapped(&codes::REQUEST_TOO_LARGE),
            Self::UnsupportedMediaType => mapped(&codes::REQUEST_UNSUPPORTED_MEDIA_TYPE),
            Self::Unavailable(_) => retryable(&codes::SERVICE_UNAVAILABLE),
            Self::NoRoute(_) => mapped(&codes::REQUEST_NO_ROUTE),
            Self::MethodNotAllowed => mapped(&codes::REQUEST_METHOD_NOT_ALLOWED),
            Self::Internal(_) => mapped(&codes::INTERNAL),
            Self::Status { status, code, .. } => Mapped {
                status: *status,
                ..mapped(code)
            },
        }
    }

    /// Whether this is a final business answer (remembered under an idempotency key).
    pub fn is_final(&self) -> bool {
        match self {
            Self::Command(e) => e.is_refusal(),
            Self::Invalid(_) | Self::BadRequest { .. } | Self::Conflict { .. } => true,
            _ => false,
        }
    }

    /// The problem body and status this error is answered with.
    pub fn problem(&self) -> (StatusCode, Problem) {
        let m = self.mapped();
        let server_side = m.status.is_server_error() && m.status != StatusCode::SERVICE_UNAVAILABLE;
        let request_id = request_id();
        let detail = if server_side {
            // Opaque to the client; the cause is logged once, with the request id.
            tracing::error!(request_id = request_id.as_deref().unwrap_or("-"), error = %self, "request failed");
            Some("An internal error occurred. Quote the request id when reporting it.".to_owned())
        } else {
            Some(self.to_string())
        };
        let title = m.status.canonical_reason().unwrap_or("Error").to_owned();
        (
            m.status,
            Problem {
                type_: format!("urn:tessera:problem:{}", m.code.code),
                title,
                status: m.status.as_u16(),
                detail,
                code: m.code.code.to_owned(),
                request_id,
                retryable: m.retryable,
                errors: m.errors,
            },
        )
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            Self::NotYetConsistent { .. }
            | Self::Unavailable(_)
            | Self::Projection(ProjectionError::NotReady(_)) => Some(1),
            Self::Command(
                CommandError::GatewayUnavailable(_)
                | CommandError::Contention { .. }
                | CommandError::Busy(_),
            ) => Some(1),
            _ => None,
        }
    }
}

/// A problem body as a response.
pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, problem) = self.problem();
        let mut response = problem_response(status, &problem);
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tessera\""),
            );
        }
        response
    }
}

/// Refuses a text PostgreSQL cannot store (U+0000) before it reaches a table outside the log,
/// with the same 422 `request.unstorable_text` the log's own check answers.
pub fn storable(field: &'static str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::Command(CommandError::Store(
            tessera_log::store::StoreError::UnstorableText {
                event_id: uuid::Uuid::nil(),
                what: field,
            },
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_refusals_answer_with_their_published_codes() {
        let sold_out = ApiError::Command(CommandError::Slot(SlotError::SoldOut {
            requested: 2,
            remaining: 1,
        }));
        let (status, p) = sold_out.problem();
        assert_eq!(
            (status, p.code.as_str()),
            (StatusCode::CONFLICT, "slot.sold_out")
        );
        let weak = ApiError::Command(CommandError::User(UserError::WeakPassword));
        let (status, p) = weak.problem();
        assert_eq!(
            (status, p.code.as_str(), p.errors[0].field.as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "user.weak_password",
                "password"
            )
        );
        let nobody = ApiError::NotFound {
            what: "referring user",
            id: "x".into(),
        };
        assert_eq!(nobody.problem().1.code, "referring_user.not_found");
    }

    #[test]
    fn server_errors_are_opaque() {
        let (status, p) = ApiError::Internal("password=hunter2 in a query".into()).problem();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!p.detail.unwrap_or_default().contains("hunter2"));
    }
}
