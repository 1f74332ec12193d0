//! A rendered message as MIME (RFC 5322): plain text and HTML as alternatives, an optional
//! calendar attachment, the RFC 8058 one-click unsubscribe headers on optional messages, and a
//! Message-ID derived from the message's outbox id (so a receiver can recognise a repeat).

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart};
use uuid::Uuid;

use crate::templates::Rendered;

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not a valid mailbox: {0}")]
    Address(String),
    #[error("the message cannot be built: {0}")]
    Build(String),
}

/// `List-Unsubscribe: <https://…>` (RFC 2369).
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.trim_matches(['<', '>']).to_owned()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), format!("<{}>", self.0))
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Debug, Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".into())
    }
}

/// What goes into one message besides its words.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub id: Uuid,
    pub from: &'a str,
    pub to_name: &'a str,
    pub to_address: &'a str,
    pub date: DateTime<Utc>,
    /// The one-click unsubscribe URL of an optional message.
    pub unsubscribe: Option<&'a str>,
    /// `(file name, iCalendar text)`.
    pub calendar: Option<(&'a str, String)>,
}

/// The message's domain for Message-IDs: the sender's.
fn domain_of(from: &str) -> &str {
    from.rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
        .unwrap_or("tessera.invalid")
}

/// The whole message, ready for SMTP or a `.eml` file.
pub fn build(envelope: &Envelope<'_>, words: &Rendered) -> Result<Vec<u8>, MessageError> {
    let from: Mailbox = envelope
        .from
        .parse()
        .map_err(|_| MessageError::Address(envelope.from.to_owned()))?;
    let to = Mailbox::new(
        Some(envelope.to_name.to_owned()).filter(|n| !n.is_empty()),
        envelope
            .to_address
            .parse()
            .map_err(|_| MessageError::Address(envelope.to_address.to_owned()))?,
    );
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(words.subject.clone())
        .date(envelope.date.into())
        .message_id(Some(format!(
            "<{}@{}>",
            envelope.id,
            domain_of(envelope.from)
        )));
    if let Some(url) = envelope.unsubscribe {
        builder = builder
            .header(ListUnsubscribe(url.to_owned()))
            .header(ListUnsubscribePost);
    }
    let alternative = MultiPart::alternative_plain_html(words.text.clone(), words.html.clone());
    let message = match &envelope.calendar {
        None => builder.multipart(alternative),
        Some((name, ics)) => builder.multipart(
            MultiPart::mixed().multipart(alternative).singlepart(
                Attachment::new((*name).to_owned()).body(
                    ics.clone(),
                    ContentType::parse("text/calendar; charset=utf-8; method=PUBLISH")
                        .map_err(|e| MessageError::Build(e.to_string()))?,
                ),
            ),
        ),
    }
    .map_err(|e| MessageError::Build(e.to_string()))?;
    Ok(message.formatted())
}

/// One calendar event (RFC 5545) for a booked slot. `sequence` orders revisions of the same
/// `uid` (0 for the first): a calendar replaces its entry with a higher one.
#[allow(clippy::too_many_arguments)]
pub fn calendar(
    uid: &str,
    sequence: u32,
    summary: &str,
    location: &str,
    description: &str,
    starts: DateTime<Utc>,
    ends: DateTime<Utc>,
    stamp: DateTime<Utc>,
) -> String {
    use icalendar::{Calendar, Component, Event, EventLike};
    let event = Event::new()
        .uid(uid)
        .summary(summary)
        .location(location)
        .description(description)
        .starts(starts)
        .ends(ends)
        .timestamp(stamp)
        .sequence(sequence)
        .done();
    Calendar::new()
        .name("Tessera")
        .push(event)
        .done()
        .to_string()
}
