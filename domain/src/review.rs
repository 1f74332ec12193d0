//! Reviews: one per completed booking (the stream is keyed by the booking), a rating from 1 to 5
//! and a text. That the booking is completed and belongs to the author is checked by the command
//! handler, which reads the booking.

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{BookingId, ListingId, UserId};

pub const MAX_REVIEW_CHARS: usize = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub booking_id: BookingId,
    pub listing_id: ListingId,
    pub author_id: UserId,
    pub rating: u8,
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub enum ReviewState {
    #[default]
    New,
    Written(Review),
}

#[derive(Debug, Clone)]
pub enum ReviewCommand {
    Write(Review),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ReviewEvent {
    ReviewWritten {
        booking_id: BookingId,
        listing_id: ListingId,
        author_id: UserId,
        rating: u8,
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("this booking already has a review")]
    AlreadyReviewed,
    #[error("a rating is 1 to 5 stars, got {0}")]
    Rating(u8),
    #[error("a review text has at most {MAX_REVIEW_CHARS} characters")]
    TooLong,
}

/// The review aggregate.
#[derive(Debug)]
pub struct ReviewAggregate;

impl Aggregate for ReviewAggregate {
    type State = ReviewState;
    type Command = ReviewCommand;
    type Event = ReviewEvent;
    type Error = ReviewError;
    const CATEGORY: &'static str = "review";

    fn decide(
        state: &ReviewState,
        command: &ReviewCommand,
    ) -> Result<Vec<ReviewEvent>, ReviewError> {
        let ReviewCommand::Write(r) = command;
        if matches!(state, ReviewState::Written(_)) {
            return Err(ReviewError::AlreadyReviewed);
        }
        if !(1..=5).contains(&r.rating) {
            return Err(ReviewError::Rating(r.rating));
        }
        if r.text.chars().count() > MAX_REVIEW_CHARS {
            return Err(ReviewError::TooLong);
        }
        Ok(vec![ReviewEvent::ReviewWritten {
            booking_id: r.booking_id,
            listing_id: r.listing_id,
            author_id: r.author_id,
            rating: r.rating,
            text: r.text.trim().to_owned(),
        }])
    }

    fn evolve(_: ReviewState, event: &ReviewEvent) -> ReviewState {
        let ReviewEvent::ReviewWritten {
            booking_id,
            listing_id,
            author_id,
            rating,
            text,
        } = event;
        ReviewState::Written(Review {
            booking_id: *booking_id,
            listing_id: *listing_id,
            author_id: *author_id,
            rating: *rating,
            text: text.clone(),
        })
    }
}
