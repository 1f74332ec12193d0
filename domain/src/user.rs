//! Users: registration (the password arrives already hashed, with argon2id, by the command
//! layer), profile changes, roles, and erasure (GDPR). E-mail uniqueness is enforced by the
//! command handler with a reservation stream per address, appended atomically with the user.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{ListingId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Provider,
    Admin,
    Auditor,
    Analyst,
}

/// A syntactically plausible, normalised (trimmed, lower-case) e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, UserError> {
        let e = raw.trim().to_lowercase();
        let valid = e.len() <= 254
            && e.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            })
            && !e.chars().any(char::is_whitespace);
        if valid {
            Ok(Self(e))
        } else {
            Err(UserError::InvalidEmail)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = UserError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub display_name: String,
    #[serde(skip_serializing)]
    pub password_hash: String,
    pub roles: BTreeSet<Role>,
    pub erased: bool,
    pub preferences: Preferences,
    /// A suspended user cannot log in and their tokens stop working.
    pub suspended: bool,
    /// A phone number to reach them (personal data, encrypted in the log).
    pub phone: Option<String>,
    /// The last password change: sessions started before it have ended, except the one that
    /// changed it.
    pub sessions_ended: Option<SessionsEnded>,
    /// Listings the user saved, in the order saved.
    #[serde(default)]
    pub wishlist: Vec<ListingId>,
    /// Whether the current address is confirmed (by its link, or trusted when the account was
    /// made: seeded, imported, or registered before verification existed). Paying needs it.
    pub email_verified: bool,
}

/// At most this many listings on a wishlist.
pub const WISHLIST_MAX: usize = 500;

/// Sessions started before `at` have ended, except `kept` (the session that changed the
/// password; none after a reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsEnded {
    pub at: chrono::DateTime<chrono::Utc>,
    pub kept: Option<uuid::Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub enum UserState {
    #[default]
    New,
    Registered(User),
}

#[derive(Debug, Clone)]
pub enum UserCommand {
    Register {
        id: UserId,
        email: Email,
        display_name: String,
        password_hash: String,
        /// The existing user who referred this one (earns the referral points).
        referred_by: Option<UserId>,
        /// Whether the address is trusted already (seeded or imported accounts); a customer
        /// registering themselves confirms it by the link sent to it.
        email_verified: bool,
    },
    UpdateProfile {
        display_name: String,
    },
    GrantRole {
        role: Role,
    },
    RevokeRole {
        role: Role,
    },
    Erase,
    SetNotificationPreferences {
        locale: Locale,
        marketing: bool,
    },
    /// Changes what is given: the display name, the phone number (`Some(None)` removes it; a
    /// number is `+`, then 6 to 15 digits). Unchanged values write nothing.
    EditProfile {
        display_name: Option<String>,
        phone: Option<Option<String>>,
    },
    /// A new password (already hashed); every session but `kept` ends.
    ChangePassword {
        password_hash: String,
        kept_session: Option<uuid::Uuid>,
        now: chrono::DateTime<chrono::Utc>,
    },
    Suspend {
        reason: String,
    },
    Unsuspend,
    /// Saves a listing on the wishlist (saving it again changes nothing).
    SaveListing {
        listing_id: ListingId,
    },
    /// Takes a listing off the wishlist (if it is there).
    UnsaveListing {
        listing_id: ListingId,
    },
    /// The link sent to `email` was opened: confirms it if it is still the account's address
    /// (confirming twice changes nothing).
    VerifyEmail {
        email: Email,
    },
    /// A new address (the handler swaps the address reservations in the same append); it is
    /// unconfirmed until its link is opened.
    ChangeEmail {
        email: Email,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    UserRegistered {
        user_id: UserId,
        email: Email,
        display_name: String,
        password_hash: String,
        /// Added without a version bump: absent means no referrer, and it is not written then,
        /// so events stored before it existed read and re-encode unchanged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        referred_by: Option<UserId>,
        /// Added without a version bump, like `referred_by`: absent means verified (accounts
        /// registered before verification existed are grandfathered), and it is written only
        /// when false, so events stored before it existed read and re-encode unchanged.
        #[serde(default = "verified", skip_serializing_if = "is_verified")]
        email_verified: bool,
    },
    UserProfileUpdated {
        user_id: UserId,
        display_name: String,
    },
    RoleGranted {
        user_id: UserId,
        role: Role,
    },
    RoleRevoked {
        user_id: UserId,
        role: Role,
    },
    UserErased {
        user_id: UserId,
    },
    /// How the user wants to be written to: the language of messages, and whether they accept
    /// the optional ones (review invitations, points, badges). Transactional messages always go.
    NotificationPreferencesSet {
        user_id: UserId,
        locale: Locale,
        marketing: bool,
    },
    /// The phone number (encrypted like every personal field); `None` removes it.
    PhoneNumberSet {
        user_id: UserId,
        phone: Option<String>,
    },
    /// The password changed (the new hash is encrypted); sessions started before `at` end,
    /// except `kept_session`.
    PasswordChanged {
        user_id: UserId,
        password_hash: String,
        kept_session: Option<uuid::Uuid>,
        at: chrono::DateTime<chrono::Utc>,
    },
    UserSuspended {
        user_id: UserId,
        reason: String,
    },
    UserUnsuspended {
        user_id: UserId,
    },
    ListingSaved {
        user_id: UserId,
        listing_id: ListingId,
    },
    ListingUnsaved {
        user_id: UserId,
        listing_id: ListingId,
    },
    /// The account's current address is confirmed (its link was opened).
    EmailVerified {
        user_id: UserId,
    },
    /// The account has a new address (personal data, encrypted), not yet confirmed.
    EmailChanged {
        user_id: UserId,
        email: Email,
    },
}

fn verified() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference.
fn is_verified(v: &bool) -> bool {
    *v
}

/// The languages messages are written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Locale {
    #[default]
    En,
    De,
}

impl Locale {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Self::En),
            "de" => Some(Self::De),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::De => "de",
        }
    }
}

/// Who receives optional messages, and in which language (the default: English, opted in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Preferences {
    pub locale: Locale,
    pub marketing: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            locale: Locale::En,
            marketing: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the user already exists")]
    AlreadyRegistered,
    #[error("the user does not exist")]
    NotRegistered,
    #[error("the user was erased")]
    Erased,
    #[error("not a valid e-mail address")]
    InvalidEmail,
    #[error("an account with this e-mail address already exists")]
    EmailTaken,
    #[error("a password needs 10 to 256 characters")]
    WeakPassword,
    #[error("a user cannot refer themselves")]
    SelfReferral,
    #[error("wrong e-mail or password")]
    BadCredentials,
    #[error("a display name has 1 to 100 characters")]
    InvalidDisplayName,
    #[error("the user already has the role {0:?}")]
    HasRole(Role),
    #[error("the user does not have the role {0:?}")]
    LacksRole(Role),
    #[error("an admin cannot erase themselves or give up their own admin role; ask another admin")]
    SelfRemoval,
    #[error("this would leave the platform without an admin")]
    LastAdmin,
    #[error("a phone number is `+` and 6 to 15 digits")]
    InvalidPhone,
    #[error("the account is suspended")]
    Suspended,
    #[error("the user is already suspended")]
    AlreadySuspended,
    #[error("the user is not suspended")]
    NotSuspended,
    #[error("a suspension needs a reason")]
    ReasonRequired,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("a wishlist holds at most {WISHLIST_MAX} listings")]
    WishlistFull,
    #[error("confirm your e-mail address (open the link sent to it) before paying")]
    EmailUnverified,
    #[error("the e-mail address is already confirmed")]
    AlreadyVerified,
    #[error("the link is for an address that is no longer the account's")]
    VerificationStale,
}

fn valid_phone(phone: &str) -> Result<String, UserError> {
    let p: String = phone
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let digits = p.strip_prefix('+').ok_or(UserError::InvalidPhone)?;
    if !(6..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UserError::InvalidPhone);
    }
    Ok(p)
}

/// The events of a profile edit: one per value that changes.
fn edit_profile(
    u: &User,
    display_name: Option<&str>,
    phone: Option<&Option<String>>,
) -> Result<Vec<UserEvent>, UserError> {
    let user_id = u.id;
    let mut events = Vec::new();
    if let Some(name) = display_name {
        let name = valid_name(name)?;
        if name != u.display_name {
            events.push(UserEvent::UserProfileUpdated {
                user_id,
                display_name: name,
            });
        }
    }
    if let Some(phone) = phone {
        let phone = phone.as_deref().map(valid_phone).transpose()?;
        if phone != u.phone {
            events.push(UserEvent::PhoneNumberSet { user_id, phone });
        }
    }
    Ok(events)
}

fn valid_name(name: &str) -> Result<String, UserError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(UserError::InvalidDisplayName);
    }
    Ok(name.to_owned())
}

/// The user aggregate.
#[derive(Debug)]
pub struct UserAggregate;

impl Aggregate for UserAggregate {
    type State = UserState;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    const CATEGORY: &'static str = "user";

    fn decide(state: &UserState, command: &UserCommand) -> Result<Vec<UserEvent>, UserError> {
        let u = match (state, command) {
            (
                UserState::New,
                UserCommand::Register {
                    id,
                    email,
                    display_name,
                    password_hash,
                    referred_by,
                    email_verified,
                },
            ) => {
                if *referred_by == Some(*id) {
                    return Err(UserError::SelfReferral);
                }
                return Ok(vec![
                    UserEvent::UserRegistered {
                        user_id: *id,
                        email: email.clone(),
                        display_name: valid_name(display_name)?,
                        password_hash: password_hash.clone(),
                        referred_by: *referred_by,
                        email_verified: *email_verified,
                    },
                    UserEvent::RoleGranted {
                        user_id: *id,
                        role: Role::Customer,
                    },
                ]);
            }
            (UserState::Registered(_), UserCommand::Register { .. }) => {
                return Err(UserError::AlreadyRegistered);
            }
            (UserState::New, _) => return Err(UserError::NotRegistered),
            (UserState::Registered(u), _) if u.erased => return Err(UserError::Erased),
            (UserState::Registered(u), _) => u,
        };
        let user_id = u.id;
        Ok(vec![match command {
            UserCommand::Register { .. } => return Err(UserError::AlreadyRegistered),
            UserCommand::UpdateProfile { display_name } => UserEvent::UserProfileUpdated {
                user_id,
                display_name: valid_name(display_name)?,
            },
            UserCommand::GrantRole { role } => {
                if u.roles.contains(role) {
                    return Err(UserError::HasRole(*role));
                }
                UserEvent::RoleGranted {
                    user_id,
                    role: *role,
                }
            }
            UserCommand::RevokeRole { role } => {
                if !u.roles.contains(role) {
                    return Err(UserError::LacksRole(*role));
                }
                UserEvent::RoleRevoked {
                    user_id,
                    role: *role,
                }
            }
            UserCommand::Erase => UserEvent::UserErased { user_id },
            UserCommand::SetNotificationPreferences { locale, marketing } => {
                UserEvent::NotificationPreferencesSet {
                    user_id,
                    locale: *locale,
                    marketing: *marketing,
                }
            }
            UserCommand::EditProfile {
                display_name,
                phone,
            } => return edit_profile(u, display_name.as_deref(), phone.as_ref()),
            UserCommand::ChangePassword {
                password_hash,
                kept_session,
                now,
            } => UserEvent::PasswordChanged {
                user_id,
                password_hash: password_hash.clone(),
                kept_session: *kept_session,
                at: *now,
            },
            UserCommand::Suspend { reason } => {
                if u.suspended {
                    return Err(UserError::AlreadySuspended);
                }
                if reason.trim().is_empty() {
                    return Err(UserError::ReasonRequired);
                }
                UserEvent::UserSuspended {
                    user_id,
                    reason: reason.trim().to_owned(),
                }
            }
            UserCommand::SaveListing { listing_id } => {
                if u.wishlist.contains(listing_id) {
                    return Ok(Vec::new());
                }
                if u.wishlist.len() >= WISHLIST_MAX {
                    return Err(UserError::WishlistFull);
                }
                UserEvent::ListingSaved {
                    user_id,
                    listing_id: *listing_id,
                }
            }
            UserCommand::UnsaveListing { listing_id } => {
                if !u.wishlist.contains(listing_id) {
                    return Ok(Vec::new());
                }
                UserEvent::ListingUnsaved {
                    user_id,
                    listing_id: *listing_id,
                }
            }
            UserCommand::Unsuspend => {
                if !u.suspended {
                    return Err(UserError::NotSuspended);
                }
                UserEvent::UserUnsuspended { user_id }
            }
            UserCommand::VerifyEmail { email } => {
                if *email != u.email {
                    return Err(UserError::VerificationStale);
                }
                if u.email_verified {
                    return Ok(Vec::new());
                }
                UserEvent::EmailVerified { user_id }
            }
            UserCommand::ChangeEmail { email } => {
                if *email == u.email {
                    return Ok(Vec::new());
                }
                UserEvent::EmailChanged {
                    user_id,
                    email: email.clone(),
                }
            }
        }])
    }

    fn evolve(state: UserState, event: &UserEvent) -> UserState {
        match (state, event) {
            (
                UserState::New,
                UserEvent::UserRegistered {
                    user_id,
                    email,
                    display_name,
                    password_hash,
                    email_verified,
                    ..
                },
            ) => UserState::Registered(User {
                id: *user_id,
                email: email.clone(),
                display_name: display_name.clone(),
                password_hash: password_hash.clone(),
                roles: BTreeSet::new(),
                erased: false,
                preferences: Preferences::default(),
                suspended: false,
                phone: None,
                sessions_ended: None,
                wishlist: Vec::new(),
                email_verified: *email_verified,
            }),
            (UserState::Registered(mut u), e) => {
                match e {
                    UserEvent::UserRegistered { .. } => {}
                    UserEvent::UserProfileUpdated { display_name, .. } => {
                        u.display_name = display_name.clone()
                    }
                    UserEvent::RoleGranted { role, .. } => {
                        u.roles.insert(*role);
                    }
                    UserEvent::RoleRevoked { role, .. } => {
                        u.roles.remove(role);
                    }
                    UserEvent::UserErased { .. } => {
                        u.erased = true;
                        u.roles.clear();
                        u.password_hash.clear();
                        u.phone = None;
                        u.wishlist.clear();
                    }
                    UserEvent::PhoneNumberSet { phone, .. } => u.phone.clone_from(phone),
                    UserEvent::PasswordChanged {
                        password_hash,
                        kept_session,
                        at,
                        ..
                    } => {
                        u.password_hash.clone_from(password_hash);
                        u.sessions_ended = Some(SessionsEnded {
                            at: *at,
                            kept: *kept_session,
                        });
                    }
                    UserEvent::UserSuspended { .. } => u.suspended = true,
                    UserEvent::ListingSaved { listing_id, .. } => u.wishlist.push(*listing_id),
                    UserEvent::ListingUnsaved { listing_id, .. } => {
                        u.wishlist.retain(|l| l != listing_id);
                    }
                    UserEvent::UserUnsuspended { .. } => u.suspended = false,
                    UserEvent::EmailVerified { .. } => u.email_verified = true,
                    UserEvent::EmailChanged { email, .. } => {
                        u.email = email.clone();
                        u.email_verified = false;
                    }
                    UserEvent::NotificationPreferencesSet {
                        locale, marketing, ..
                    } => {
                        u.preferences = Preferences {
                            locale: *locale,
                            marketing: *marketing,
                        }
                    }
                }
                UserState::Registered(u)
            }
            (state, _) => state,
        }
    }
}

/// One stream per e-mail address (keyed by a hash of it): whoever reserves it first owns it.
/// Appended together with the user's registration, it makes e-mail addresses unique.
#[derive(Debug)]
pub struct EmailReservationAggregate;

#[derive(Debug, Clone)]
pub enum EmailReservationCommand {
    Reserve {
        user_id: UserId,
    },
    /// The owner was erased: the address is free for a new, unrelated account (ADR 0004).
    Release {
        user_id: UserId,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EmailReservationEvent {
    EmailReserved { user_id: UserId },
    EmailReleased { user_id: UserId },
}

impl Aggregate for EmailReservationAggregate {
    type State = Option<UserId>;
    type Command = EmailReservationCommand;
    type Event = EmailReservationEvent;
    type Error = UserError;
    const CATEGORY: &'static str = "email";

    fn decide(
        state: &Option<UserId>,
        command: &EmailReservationCommand,
    ) -> Result<Vec<EmailReservationEvent>, UserError> {
        match (command, state) {
            (EmailReservationCommand::Reserve { .. }, Some(_)) => Err(UserError::EmailTaken),
            (EmailReservationCommand::Reserve { user_id }, None) => {
                Ok(vec![EmailReservationEvent::EmailReserved {
                    user_id: *user_id,
                }])
            }
            // Only the holder's erasure releases an address; anything else changes nothing.
            (EmailReservationCommand::Release { user_id }, Some(holder)) if holder == user_id => {
                Ok(vec![EmailReservationEvent::EmailReleased {
                    user_id: *user_id,
                }])
            }
            (EmailReservationCommand::Release { .. }, _) => Ok(Vec::new()),
        }
    }

    fn evolve(_: Option<UserId>, event: &EmailReservationEvent) -> Option<UserId> {
        match event {
            EmailReservationEvent::EmailReserved { user_id } => Some(*user_id),
            EmailReservationEvent::EmailReleased { .. } => None,
        }
    }
}
