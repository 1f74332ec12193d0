//! Payments, loyalty, reviews and users.

use tessera_domain::Aggregate;
use tessera_domain::aggregate::spec::given;
use tessera_domain::loyalty::{
    AwardReason, Badge, LoyaltyAggregate as L, LoyaltyCommand as LC, LoyaltyError as LE,
    LoyaltyEvent as LEv,
};
use tessera_domain::payment::{
    PaymentAggregate as P, PaymentCommand as PC, PaymentError as PE, PaymentEvent as PEv,
    PaymentStatus,
};
use tessera_domain::review::{
    Review, ReviewAggregate as R, ReviewCommand as RC, ReviewError as RE,
};
use tessera_domain::user::{
    Email, Role, UserAggregate as U, UserCommand as UC, UserError as UE, UserEvent as UEv,
    UserState,
};
use tessera_domain::values::{BookingId, UserId};
use uuid::Uuid;

use crate::fixtures::*;

fn intent() -> PEv {
    PEv::PaymentIntentCreated {
        payment_id: PAYMENT,
        booking_id: BOOKING,
        customer_id: CUSTOMER,
        amount: eur(10_000),
        provider: "simulated".into(),
        provider_ref: "sim_1".into(),
    }
}

fn succeeded() -> PEv {
    PEv::PaymentSucceeded {
        payment_id: PAYMENT,
        booking_id: BOOKING,
        amount: eur(10_000),
    }
}

#[test]
fn payments_succeed_or_fail_once() {
    given::<P>(&[intent()]).when_then(PC::MarkSucceeded, &[succeeded()]);
    given::<P>(&[intent()]).when_then(
        PC::MarkFailed {
            reason: "card declined".into(),
        },
        &[PEv::PaymentFailed {
            payment_id: PAYMENT,
            booking_id: BOOKING,
            reason: "card declined".into(),
        }],
    );
    given::<P>(&[intent(), succeeded()]).when_err(
        PC::MarkFailed {
            reason: "late".into(),
        },
        PE::NotPending(PaymentStatus::Succeeded),
    );
    given::<P>(&[intent(), succeeded()])
        .when_err(PC::MarkSucceeded, PE::NotPending(PaymentStatus::Succeeded));
    given::<P>(&[]).when_err(PC::MarkSucceeded, PE::NotCreated);
}

#[test]
fn refunds_are_capped_by_the_payment() {
    let (r1, r2) = (Uuid::from_u128(1), Uuid::from_u128(2));
    given::<P>(&[intent()]).when_err(
        PC::RequestRefund {
            refund_id: r1,
            amount: eur(1),
        },
        PE::NotSucceeded,
    );
    let requested = PEv::RefundRequested {
        payment_id: PAYMENT,
        booking_id: BOOKING,
        refund_id: r1,
        amount: eur(6_000),
    };
    given::<P>(&[intent(), succeeded()]).when_then(
        PC::RequestRefund {
            refund_id: r1,
            amount: eur(6_000),
        },
        std::slice::from_ref(&requested),
    );
    let history = [intent(), succeeded(), requested.clone()];
    given::<P>(&history).when_err(
        PC::RequestRefund {
            refund_id: r2,
            amount: eur(4_001),
        },
        PE::RefundExceedsPaid {
            paid: eur(10_000),
            committed: 6_000,
        },
    );
    given::<P>(&history).when_err(
        PC::RequestRefund {
            refund_id: r1,
            amount: eur(1),
        },
        PE::DuplicateRefund(r1),
    );
    // A failed refund gives its amount back to what may still be refunded.
    let failed = PEv::RefundFailed {
        payment_id: PAYMENT,
        booking_id: BOOKING,
        refund_id: r1,
        reason: "expired card".into(),
    };
    given::<P>(&history).when_then(
        PC::RefundFailed {
            refund_id: r1,
            reason: "expired card".into(),
        },
        std::slice::from_ref(&failed),
    );
    given::<P>(&[intent(), succeeded(), requested, failed]).when_then(
        PC::RequestRefund {
            refund_id: r2,
            amount: eur(10_000),
        },
        &[PEv::RefundRequested {
            payment_id: PAYMENT,
            booking_id: BOOKING,
            refund_id: r2,
            amount: eur(10_000),
        }],
    );
    given::<P>(&[intent(), succeeded()])
        .when_err(PC::RefundSucceeded { refund_id: r1 }, PE::UnknownRefund(r1));
}

fn booking(n: u128) -> BookingId {
    BookingId(Uuid::from_u128(500 + n))
}

#[test]
fn loyalty_follows_the_seed_rules() {
    let state = given::<L>(&[]).when_then(
        LC::RecordBookingConfirmed {
            booking_id: booking(1),
        },
        &[
            LEv::PointsAwarded {
                points: 500,
                reason: AwardReason::FirstBooking,
                booking_id: Some(booking(1)),
                source: booking(1).to_string(),
            },
            LEv::BadgeEarned {
                badge: Badge::FirstTraveler,
            },
        ],
    );
    assert_eq!(state.balance, 500);
    // Later bookings earn on completion, not on confirmation.
    let history: Vec<LEv> = L::decide(
        &L::replay(&[]),
        &LC::RecordBookingConfirmed {
            booking_id: booking(1),
        },
    )
    .expect("first");
    assert!(
        L::decide(
            &L::replay(&history),
            &LC::RecordBookingConfirmed {
                booking_id: booking(2)
            }
        )
        .expect("second")
        .is_empty()
    );
    // Awards are once per booking and reason.
    let mut h = history.clone();
    h.extend(
        L::decide(
            &L::replay(&h),
            &LC::RecordBookingCompleted {
                booking_id: booking(1),
            },
        )
        .expect("completed"),
    );
    given::<L>(&h).when_err(
        LC::RecordBookingCompleted {
            booking_id: booking(1),
        },
        LE::AlreadyAwarded(AwardReason::BookingCompleted),
    );
    assert_eq!(L::replay(&h).balance, 600);
}

#[test]
fn badges_come_at_their_milestones() {
    let mut h = Vec::new();
    for n in 0..10 {
        h.extend(
            L::decide(
                &L::replay(&h),
                &LC::RecordBookingCompleted {
                    booking_id: booking(n),
                },
            )
            .expect("completed"),
        );
    }
    for n in 0..5 {
        h.extend(
            L::decide(
                &L::replay(&h),
                &LC::RecordReviewWritten {
                    booking_id: booking(n),
                },
            )
            .expect("review"),
        );
    }
    let a = L::replay(&h);
    assert_eq!(a.balance, 10 * 100 + 5 * 50);
    assert!(a.badges.contains(&Badge::GlobeTrotter) && a.badges.contains(&Badge::SocialButterfly));
    assert_eq!(
        h.iter()
            .filter(|e| matches!(e, LEv::BadgeEarned { .. }))
            .count(),
        2,
        "each badge once"
    );
    h.extend(
        L::decide(
            &a,
            &LC::Redeem {
                booking_id: booking(20),
                points: 1_000,
                value: eur(50_000),
            },
        )
        .expect("redeem"),
    );
    assert!(L::replay(&h).badges.contains(&Badge::BudgetMaster));
}

#[test]
fn reversals_never_take_the_balance_below_zero() {
    let mut h = L::decide(
        &L::replay(&[]),
        &LC::RecordBookingConfirmed {
            booking_id: booking(1),
        },
    )
    .expect("first");
    h.extend(
        L::decide(
            &L::replay(&h),
            &LC::Redeem {
                booking_id: booking(9),
                points: 400,
                value: eur(2_000),
            },
        )
        .expect("redeem"),
    );
    given::<L>(&h).when_then(
        LC::ReverseForBooking {
            booking_id: booking(1),
        },
        &[LEv::PointsReversed {
            booking_id: booking(1),
            points: 100,
        }],
    );
    h.push(LEv::PointsReversed {
        booking_id: booking(1),
        points: 100,
    });
    given::<L>(&h).when_err(
        LC::ReverseForBooking {
            booking_id: booking(1),
        },
        LE::NothingToReverse(booking(1)),
    );
    given::<L>(&h).when_err(
        LC::Redeem {
            booking_id: booking(9),
            points: 1,
            value: eur(1),
        },
        LE::InsufficientPoints {
            balance: 0,
            needed: 1,
        },
    );
    given::<L>(&h).when_err(
        LC::Adjust { delta: -1 },
        LE::InsufficientPoints {
            balance: 0,
            needed: 1,
        },
    );
    given::<L>(&h).when_then(
        LC::Adjust { delta: 25 },
        &[LEv::PointsAdjusted { delta: 25 }],
    );
}

#[test]
fn one_review_per_booking_with_a_valid_rating() {
    let review = |rating| Review {
        booking_id: BOOKING,
        listing_id: LISTING,
        author_id: CUSTOMER,
        rating,
        text: " Lovely. ".into(),
    };
    let state = given::<R>(&[]).when_then(
        RC::Write(review(5)),
        &[tessera_domain::review::ReviewEvent::ReviewWritten {
            booking_id: BOOKING,
            listing_id: LISTING,
            author_id: CUSTOMER,
            rating: 5,
            text: "Lovely.".into(),
        }],
    );
    assert!(matches!(
        R::decide(&state, &RC::Write(review(4))),
        Err(RE::AlreadyReviewed)
    ));
    given::<R>(&[]).when_err(RC::Write(review(0)), RE::Rating(0));
    given::<R>(&[]).when_err(RC::Write(review(6)), RE::Rating(6));
}

#[test]
fn users_register_as_customers_and_can_be_erased() {
    let id = UserId(Uuid::from_u128(77));
    let email = Email::parse("  Ada@Example.org ").expect("email");
    assert_eq!(email.as_str(), "ada@example.org");
    assert_eq!(Email::parse("not-an-email"), Err(UE::InvalidEmail));
    let registered = UEv::UserRegistered {
        user_id: id,
        email: email.clone(),
        display_name: "Ada".into(),
        password_hash: "$argon2id$…".into(),
        referred_by: None,
        email_verified: false,
    };
    given::<U>(&[]).when_then(
        UC::Register {
            id,
            email,
            display_name: " Ada ".into(),
            password_hash: "$argon2id$…".into(),
            referred_by: None,
            email_verified: false,
        },
        &[
            registered.clone(),
            UEv::RoleGranted {
                user_id: id,
                role: Role::Customer,
            },
        ],
    );
    let history = [
        registered,
        UEv::RoleGranted {
            user_id: id,
            role: Role::Customer,
        },
    ];
    given::<U>(&history).when_err(
        UC::GrantRole {
            role: Role::Customer,
        },
        UE::HasRole(Role::Customer),
    );
    given::<U>(&history).when_err(
        UC::RevokeRole { role: Role::Admin },
        UE::LacksRole(Role::Admin),
    );
    given::<U>(&history).when_err(
        UC::UpdateProfile {
            display_name: " ".into(),
        },
        UE::InvalidDisplayName,
    );
    let erased = given::<U>(&history).when_then(UC::Erase, &[UEv::UserErased { user_id: id }]);
    let UserState::Registered(u) = &erased else {
        panic!("registered")
    };
    assert!(u.erased && u.roles.is_empty() && u.password_hash.is_empty());
    assert!(matches!(
        U::decide(&erased, &UC::GrantRole { role: Role::Admin }),
        Err(UE::Erased)
    ));
}

#[test]
fn listings_publish_update_reprice_and_retire() {
    use tessera_domain::listing::{
        Destination, ListingAggregate as Li, ListingCommand as LiC, ListingDetails,
        ListingError as LiE, ListingEvent as LiEv, ListingKind,
    };
    use tessera_domain::policy::CancellationPolicy;
    let details = ListingDetails {
        kind: ListingKind::Experience,
        title: "Tapas walk".into(),
        description: "Six bars in the old town.".into(),
        destination: Destination {
            name: "Seville".into(),
            country: "ES".into(),
            lat: 37.3891,
            lon: -5.9845,
        },
        category: "food".into(),
        duration_minutes: 180,
        tax_rate_bp: 1000,
        includes: vec![],
        itinerary: vec![],
    };
    let publish = |d: ListingDetails| LiC::Publish {
        id: LISTING,
        provider_id: PROVIDER,
        details: d,
        base_price: eur(4_500),
        policy: CancellationPolicy::standard(),
    };
    let published = LiEv::ListingPublished {
        listing_id: LISTING,
        provider_id: PROVIDER,
        details: details.clone(),
        base_price: eur(4_500),
        policy: CancellationPolicy::standard(),
    };
    given::<Li>(&[]).when_then(publish(details.clone()), std::slice::from_ref(&published));
    given::<Li>(std::slice::from_ref(&published))
        .when_err(publish(details.clone()), LiE::AlreadyPublished);
    let mut bad = details.clone();
    bad.destination.lat = 91.0;
    given::<Li>(&[]).when_err(publish(bad), LiE::Invalid("coordinates are out of range"));
    let mut itinerary = details.clone();
    itinerary.itinerary = vec![tessera_domain::listing::ItineraryDay {
        day: 1,
        title: "x".into(),
        description: "y".into(),
    }];
    given::<Li>(&[]).when_err(
        publish(itinerary),
        LiE::Invalid("only packages have itinerary days"),
    );
    given::<Li>(std::slice::from_ref(&published)).when_then(
        LiC::Reprice {
            base_price: eur(5_000),
        },
        &[LiEv::ListingRepriced {
            listing_id: LISTING,
            base_price: eur(5_000),
        }],
    );
    let usd = tessera_domain::values::Money::new(
        5_000,
        tessera_domain::values::Currency::new("USD").expect("usd"),
    )
    .expect("m");
    given::<Li>(std::slice::from_ref(&published)).when_err(
        LiC::Reprice { base_price: usd },
        LiE::Invalid("the currency of a listing cannot change"),
    );
    let retired = LiEv::ListingRetired {
        listing_id: LISTING,
        reason: "closed".into(),
    };
    given::<Li>(std::slice::from_ref(&published)).when_then(
        LiC::Retire {
            reason: "closed".into(),
        },
        std::slice::from_ref(&retired),
    );
    given::<Li>(&[published, retired]).when_err(LiC::Reprice { base_price: eur(1) }, LiE::Retired);
    given::<Li>(&[]).when_err(LiC::Retire { reason: "x".into() }, LiE::NotPublished);
}

#[test]
fn late_payments_are_accepted_only_for_expired_bookings_with_that_payment() {
    use tessera_domain::booking::{
        BookingAggregate as B, BookingCommand as C, BookingError as E, BookingEvent as Ev,
        BookingStatus,
    };
    let expired = vec![
        placed(),
        payment_started(),
        Ev::BookingExpired {
            booking_id: BOOKING,
        },
    ];
    let state = given::<B>(&expired).when_then(
        C::AcceptLatePayment {
            payment_id: PAYMENT,
            amount: eur(10_000),
        },
        &[Ev::LatePaymentAccepted {
            booking_id: BOOKING,
            payment_id: PAYMENT,
            amount_paid: eur(10_000),
        }],
    );
    assert_eq!(
        state.booking().map(|b| (b.status, b.paid)),
        Some((BookingStatus::Confirmed, eur(10_000)))
    );
    given::<B>(&[placed(), payment_started()]).when_err(
        C::AcceptLatePayment {
            payment_id: PAYMENT,
            amount: eur(10_000),
        },
        E::InvalidTransition {
            from: BookingStatus::PaymentPending,
            action: "accept a late payment",
        },
    );
    let other = tessera_domain::values::PaymentId(Uuid::from_u128(42));
    given::<B>(&expired).when_err(
        C::AcceptLatePayment {
            payment_id: other,
            amount: eur(10_000),
        },
        E::WrongPayment { got: other },
    );
}

/// Every payment command from every payment state: legal ones pass, the rest are typed errors.
#[test]
fn payment_transition_matrix() {
    let r = Uuid::from_u128(1);
    let create = PC::CreateIntent {
        id: PAYMENT,
        booking_id: BOOKING,
        customer_id: CUSTOMER,
        amount: eur(10_000),
        provider: "simulated".into(),
        provider_ref: "sim_1".into(),
    };
    let commands: Vec<(&str, PC)> = vec![
        ("create", create),
        ("succeed", PC::MarkSucceeded),
        ("fail", PC::MarkFailed { reason: "x".into() }),
        (
            "refund",
            PC::RequestRefund {
                refund_id: Uuid::from_u128(2),
                amount: eur(100),
            },
        ),
        ("refund-ok", PC::RefundSucceeded { refund_id: r }),
        (
            "refund-failed",
            PC::RefundFailed {
                refund_id: r,
                reason: "x".into(),
            },
        ),
    ];
    let failed = PEv::PaymentFailed {
        payment_id: PAYMENT,
        booking_id: BOOKING,
        reason: "x".into(),
    };
    let requested = PEv::RefundRequested {
        payment_id: PAYMENT,
        booking_id: BOOKING,
        refund_id: r,
        amount: eur(100),
    };
    let states: Vec<(&str, Vec<PEv>, &[&str])> = vec![
        ("new", vec![], &["create"]),
        ("pending", vec![intent()], &["succeed", "fail"]),
        ("succeeded", vec![intent(), succeeded()], &["refund"]),
        ("failed", vec![intent(), failed], &[]),
        (
            "refund requested",
            vec![intent(), succeeded(), requested],
            &["refund", "refund-ok", "refund-failed"],
        ),
    ];
    for (state_name, history, legal) in &states {
        let state = P::replay(history);
        for (name, command) in &commands {
            let outcome = P::decide(&state, command);
            assert_eq!(
                outcome.is_ok(),
                legal.contains(name),
                "{name} from {state_name}: {outcome:?}"
            );
        }
    }
}

/// Every slot command from every slot state.
#[test]
fn slot_transition_matrix() {
    use tessera_domain::slot::{SlotAggregate as S, SlotCommand as SC, SlotEvent as SEv};
    use tessera_domain::values::Seats;
    let b = BookingId(Uuid::from_u128(900));
    let scheduled = SEv::SlotScheduled {
        slot_id: SLOT,
        listing_id: LISTING,
        provider_id: PROVIDER,
        starts_at: t(20, 10),
        ends_at: t(20, 14),
        capacity: 4,
        price_per_seat: eur(5_000),
    };
    let held = SEv::SeatsHeld {
        slot_id: SLOT,
        booking_id: b,
        seats: 1,
        overbooked: false,
    };
    let confirmed = SEv::SeatsConfirmed {
        slot_id: SLOT,
        booking_id: b,
        seats: 1,
    };
    let cancelled = SEv::SlotCancelled {
        slot_id: SLOT,
        reason: "x".into(),
        affected_bookings: vec![b],
    };
    let commands: Vec<(&str, SC)> = vec![
        (
            "schedule",
            SC::Schedule {
                id: SLOT,
                listing_id: LISTING,
                provider_id: PROVIDER,
                starts_at: t(20, 10),
                ends_at: t(20, 14),
                capacity: 4,
                price_per_seat: eur(5_000),
            },
        ),
        ("capacity", SC::ChangeCapacity { capacity: 3 }),
        (
            "hold",
            SC::HoldSeats {
                booking_id: BookingId(Uuid::from_u128(901)),
                seats: Seats::new(1).expect("seats"),
                now: t(1, 9),
                allow_overbook: false,
            },
        ),
        ("confirm", SC::ConfirmSeats { booking_id: b }),
        ("release", SC::ReleaseSeats { booking_id: b }),
        ("cancel", SC::Cancel { reason: "x".into() }),
    ];
    let states: Vec<(&str, Vec<SEv>, &[&str])> = vec![
        ("new", vec![], &["schedule"]),
        (
            "scheduled",
            vec![scheduled.clone()],
            &["capacity", "hold", "cancel"],
        ),
        (
            "seats held",
            vec![scheduled.clone(), held.clone()],
            &["capacity", "hold", "confirm", "release", "cancel"],
        ),
        (
            "seats confirmed",
            vec![scheduled.clone(), held.clone(), confirmed],
            &["capacity", "hold", "release", "cancel"],
        ),
        ("cancelled", vec![scheduled, held, cancelled], &["release"]),
    ];
    for (state_name, history, legal) in &states {
        let state = S::replay(history);
        for (name, command) in &commands {
            let outcome = S::decide(&state, command);
            assert_eq!(
                outcome.is_ok(),
                legal.contains(name),
                "{name} from {state_name}: {outcome:?}"
            );
        }
    }
}

#[test]
fn nobody_refers_themselves() {
    let id = UserId(Uuid::from_u128(78));
    given::<U>(&[]).when_err(
        UC::Register {
            id,
            email: Email::parse("x@example.org").expect("email"),
            display_name: "X".into(),
            password_hash: "h".into(),
            referred_by: Some(id),
            email_verified: false,
        },
        UE::SelfReferral,
    );
}

#[test]
fn profiles_change_only_what_differs_and_suspensions_need_a_reason() {
    let id = UserId(Uuid::from_u128(79));
    let history = [
        UEv::UserRegistered {
            user_id: id,
            email: Email::parse("p@example.org").expect("email"),
            display_name: "Pat".into(),
            password_hash: "h0".into(),
            referred_by: None,
            email_verified: true,
        },
        UEv::RoleGranted {
            user_id: id,
            role: Role::Customer,
        },
    ];
    // The same name writes nothing; a phone is normalised; a bad one is refused.
    given::<U>(&history).when_then(
        UC::EditProfile {
            display_name: Some(" Pat ".into()),
            phone: Some(Some("+351 912-345 678".into())),
        },
        &[UEv::PhoneNumberSet {
            user_id: id,
            phone: Some("+351912345678".into()),
        }],
    );
    for bad in ["912345678", "+12", "+3519123456789012", "+351 91x"] {
        given::<U>(&history).when_err(
            UC::EditProfile {
                display_name: None,
                phone: Some(Some(bad.into())),
            },
            UE::InvalidPhone,
        );
    }
    let with_phone = [
        history.to_vec(),
        vec![UEv::PhoneNumberSet {
            user_id: id,
            phone: Some("+351912345678".into()),
        }],
    ]
    .concat();
    given::<U>(&with_phone).when_then(
        UC::EditProfile {
            display_name: Some("Patricia".into()),
            phone: Some(None),
        },
        &[
            UEv::UserProfileUpdated {
                user_id: id,
                display_name: "Patricia".into(),
            },
            UEv::PhoneNumberSet {
                user_id: id,
                phone: None,
            },
        ],
    );

    // A password change ends the other sessions.
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("at");
    let kept = Uuid::from_u128(5);
    let changed = given::<U>(&history).when_then(
        UC::ChangePassword {
            password_hash: "h1".into(),
            kept_session: Some(kept),
            now: at,
        },
        &[UEv::PasswordChanged {
            user_id: id,
            password_hash: "h1".into(),
            kept_session: Some(kept),
            at,
        }],
    );
    let UserState::Registered(u) = &changed else {
        panic!("registered")
    };
    assert_eq!(u.password_hash, "h1");
    assert_eq!(
        u.sessions_ended,
        Some(tessera_domain::user::SessionsEnded {
            at,
            kept: Some(kept)
        })
    );

    // Suspensions need a reason, happen once, and are lifted once.
    given::<U>(&history).when_err(
        UC::Suspend {
            reason: "  ".into(),
        },
        UE::ReasonRequired,
    );
    given::<U>(&history).when_err(UC::Unsuspend, UE::NotSuspended);
    let suspended = given::<U>(&history).when_then(
        UC::Suspend {
            reason: " fraud ".into(),
        },
        &[UEv::UserSuspended {
            user_id: id,
            reason: "fraud".into(),
        }],
    );
    assert!(matches!(&suspended, UserState::Registered(u) if u.suspended));
    let twice = [
        history.to_vec(),
        vec![UEv::UserSuspended {
            user_id: id,
            reason: "fraud".into(),
        }],
    ]
    .concat();
    given::<U>(&twice).when_err(
        UC::Suspend {
            reason: "again".into(),
        },
        UE::AlreadySuspended,
    );
    let lifted =
        given::<U>(&twice).when_then(UC::Unsuspend, &[UEv::UserUnsuspended { user_id: id }]);
    assert!(matches!(&lifted, UserState::Registered(u) if !u.suspended));
}

#[test]
fn an_address_is_confirmed_once_and_a_new_one_needs_its_own_confirmation() {
    let id = UserId(Uuid::from_u128(80));
    let old = Email::parse("pat@example.org").expect("email");
    let new = Email::parse("pat@example.com").expect("email");
    let registered = UEv::UserRegistered {
        user_id: id,
        email: old.clone(),
        display_name: "Pat".into(),
        password_hash: "h".into(),
        referred_by: None,
        email_verified: false,
    };
    let verified = given::<U>(std::slice::from_ref(&registered)).when_then(
        UC::VerifyEmail { email: old.clone() },
        &[UEv::EmailVerified { user_id: id }],
    );
    let tessera_domain::user::UserState::Registered(u) = &verified else {
        panic!("registered");
    };
    assert!(u.email_verified);
    let history = [registered.clone(), UEv::EmailVerified { user_id: id }];
    // Confirming again writes nothing; the same address is no change.
    given::<U>(&history).when_then(UC::VerifyEmail { email: old.clone() }, &[]);
    given::<U>(&history).when_then(UC::ChangeEmail { email: old.clone() }, &[]);
    // A new address is unconfirmed; a link for the old one no longer confirms anything.
    let changed = given::<U>(&history).when_then(
        UC::ChangeEmail { email: new.clone() },
        &[UEv::EmailChanged {
            user_id: id,
            email: new.clone(),
        }],
    );
    let tessera_domain::user::UserState::Registered(u) = &changed else {
        panic!("registered");
    };
    assert_eq!(
        (u.email.as_str(), u.email_verified),
        ("pat@example.com", false)
    );
    let mut moved = history.to_vec();
    moved.push(UEv::EmailChanged {
        user_id: id,
        email: new.clone(),
    });
    given::<U>(&moved).when_err(UC::VerifyEmail { email: old }, UE::VerificationStale);
    given::<U>(&moved).when_then(
        UC::VerifyEmail { email: new },
        &[UEv::EmailVerified { user_id: id }],
    );
    // Registered before confirmation existed (no field): confirmed.
    let old_shape: UEv = serde_json::from_value(serde_json::json!({
        "type": "UserRegistered",
        "data": { "user_id": id, "email": "x@example.org", "display_name": "X", "password_hash": "h" }
    }))
    .expect("decodes");
    assert!(matches!(
        old_shape,
        UEv::UserRegistered {
            email_verified: true,
            ..
        }
    ));
    assert!(
        !serde_json::to_string(&old_shape)
            .expect("json")
            .contains("email_verified"),
        "re-encodes unchanged"
    );
}
