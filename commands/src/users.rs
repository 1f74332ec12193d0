//! User commands: registration with an argon2id password hash and a unique e-mail address,
//! and credential checks. Hashing is CPU-heavy, so it runs on the blocking pool.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};
use tessera_domain::Aggregate;
use tessera_domain::user::{
    Email, EmailReservationAggregate, EmailReservationCommand, User, UserAggregate, UserCommand,
    UserError, UserState,
};
use tessera_domain::values::{UserId, derived_id};
use uuid::Uuid;

use crate::error::CommandError;
use crate::handler::{CommandContext, Executed, execute, load, stream_of, write_for};
use tessera_log::store::{EventStore, StreamId};

/// The reservation stream of an e-mail address (a hash: no address in a stream name).
pub fn email_stream(email: &Email) -> StreamId {
    let digest = hex::encode(&Sha256::digest(email.as_str().as_bytes())[..16]);
    stream_of::<EmailReservationAggregate>(digest)
}

/// An address given for an account (registration, change): stricter than what decodes from
/// the log, which must keep reading every address it ever stored. No control characters: an
/// address is written into mail headers.
fn new_address(raw: &str) -> Result<Email, UserError> {
    if raw.chars().any(char::is_control) {
        return Err(UserError::InvalidEmail);
    }
    Email::parse(raw)
}

/// Hashes a password with argon2id (random salt), off the async runtime.
pub async fn hash_password(password: String) -> Result<String, CommandError> {
    let len = password.chars().count();
    if !(10..=256).contains(&len) {
        return Err(UserError::WeakPassword.into());
    }
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| CommandError::Codec(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| CommandError::Codec(e.to_string()))?
}

/// Whether `password` matches the stored argon2 hash, off the async runtime.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// Registers a customer. The user id derives from the command, so a retry registers nobody twice.
pub async fn register_user(
    store: &dyn EventStore,
    email: &str,
    display_name: &str,
    password: &str,
    referred_by: Option<UserId>,
    ctx: &CommandContext,
) -> Result<(UserId, Executed), CommandError> {
    let password_hash = hash_password(password.to_owned()).await?;
    register(
        store,
        email,
        display_name,
        password_hash,
        referred_by,
        false,
        ctx,
    )
    .await
}

/// Registers a user whose password is already hashed (argon2id PHC string) and whose address
/// the platform trusts already (seeded or imported accounts: no confirmation link): the fixture
/// generator hashes its one demo password once, with a seeded salt, for thousands of users.
pub async fn register_user_hashed(
    store: &dyn EventStore,
    email: &str,
    display_name: &str,
    password_hash: String,
    referred_by: Option<UserId>,
    ctx: &CommandContext,
) -> Result<(UserId, Executed), CommandError> {
    register(
        store,
        email,
        display_name,
        password_hash,
        referred_by,
        true,
        ctx,
    )
    .await
}

async fn register(
    store: &dyn EventStore,
    email: &str,
    display_name: &str,
    password_hash: String,
    referred_by: Option<UserId>,
    email_verified: bool,
    ctx: &CommandContext,
) -> Result<(UserId, Executed), CommandError> {
    let email = new_address(email)?;
    if let Some(referrer) = referred_by {
        let known =
            load::<UserAggregate>(store, stream_of::<UserAggregate>(referrer), Uuid::nil()).await?;
        if !matches!(known.state, UserState::Registered(ref u) if !u.erased) {
            return Err(CommandError::NotFound {
                what: "referring user",
                id: referrer.to_string(),
            });
        }
    }
    let user_id = UserId(derived_id(ctx.command_id, b"user"));
    let user =
        load::<UserAggregate>(store, stream_of::<UserAggregate>(user_id), ctx.command_id).await?;
    if let Some(last) = user.caused_by_command.last() {
        return Ok((
            user_id,
            Executed {
                position: last.position,
                replayed: true,
            },
        ));
    }
    let reservation =
        load::<EmailReservationAggregate>(store, email_stream(&email), ctx.command_id).await?;
    let reserved = EmailReservationAggregate::decide(
        &reservation.state,
        &EmailReservationCommand::Reserve { user_id },
    )?;
    let registered = UserAggregate::decide(
        &user.state,
        &UserCommand::Register {
            id: user_id,
            email,
            display_name: display_name.to_owned(),
            password_hash,
            referred_by,
            email_verified,
        },
    )?;
    // Both streams must be new: a concurrent registration of the same address conflicts here.
    match store
        .append(vec![
            write_for(&user, &registered, ctx)?,
            write_for(&reservation, &reserved, ctx)?,
        ])
        .await
    {
        Ok(r) => Ok((
            user_id,
            Executed {
                position: r.last_position,
                replayed: false,
            },
        )),
        Err(e) if e.is_conflict() => Err(UserError::EmailTaken.into()),
        Err(e) => Err(e.into()),
    }
}

/// Checks credentials and returns the user. The same error for an unknown address and a wrong
/// password, so the answer does not reveal which accounts exist.
pub async fn authenticate(
    store: &dyn EventStore,
    email: &str,
    password: &str,
) -> Result<User, CommandError> {
    let email = Email::parse(email).map_err(|_| UserError::BadCredentials)?;
    let reservation =
        load::<EmailReservationAggregate>(store, email_stream(&email), Uuid::nil()).await?;
    let user = match reservation.state {
        Some(user_id) => {
            match load::<UserAggregate>(store, stream_of::<UserAggregate>(user_id), Uuid::nil())
                .await?
                .state
            {
                UserState::Registered(u) if !u.erased => Some(u),
                _ => None,
            }
        }
        None => None,
    };
    // Verify against a real hash of nothing when the user is unknown, so both answers cost
    // the same argon2 work and do not reveal which accounts exist.
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let hash = match &user {
        Some(u) => u.password_hash.clone(),
        None => DUMMY
            .get_or_try_init(|| hash_password("tessera-dummy-password".to_owned()))
            .await?
            .clone(),
    };
    let ok = verify_password(password.to_owned(), hash).await;
    match user {
        // Only someone who knows the password learns that the account is suspended.
        Some(u) if ok && u.suspended => Err(UserError::Suspended.into()),
        Some(u) if ok => Ok(u),
        _ => Err(UserError::BadCredentials.into()),
    }
}

/// The registered, not erased user of an e-mail address, if there is one.
pub async fn find_by_email(
    store: &dyn EventStore,
    email: &str,
) -> Result<Option<UserId>, CommandError> {
    let Ok(email) = Email::parse(email) else {
        return Ok(None);
    };
    let reservation =
        load::<EmailReservationAggregate>(store, email_stream(&email), Uuid::nil()).await?;
    let Some(user_id) = reservation.state else {
        return Ok(None);
    };
    Ok(current_user(store, user_id).await.ok().map(|u| u.id))
}

/// A registered, not erased user (for token refreshes and role checks).
pub async fn current_user(store: &dyn EventStore, user_id: UserId) -> Result<User, CommandError> {
    match load::<UserAggregate>(store, stream_of::<UserAggregate>(user_id), Uuid::nil())
        .await?
        .state
    {
        UserState::Registered(u) if !u.erased => Ok(u),
        _ => Err(CommandError::NotFound {
            what: "user",
            id: user_id.to_string(),
        }),
    }
}

/// Grants (or, with `grant == false`, revokes) a role; an admin command with a reason.
pub async fn change_role(
    store: &dyn EventStore,
    user_id: UserId,
    role: tessera_domain::user::Role,
    grant: bool,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    if ctx.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(CommandError::ReasonRequired);
    }
    let command = if grant {
        UserCommand::GrantRole { role }
    } else {
        UserCommand::RevokeRole { role }
    };
    execute_keeping_an_admin(store, user_id, &command, ctx).await
}

/// Runs a user command; one that takes the admin role away (revoking it, erasing an admin) must
/// leave another admin behind. The acting admin is that witness: they may not remove themselves
/// (another admin does it), they must still be an admin, and the append guards their stream at
/// the version read, so two admins removing each other at once cannot both succeed (the second
/// conflicts, re-decides, and finds no witness left).
pub async fn execute_keeping_an_admin(
    store: &dyn EventStore,
    user_id: UserId,
    command: &UserCommand,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    use tessera_domain::user::Role;
    crate::handler::decide_and_append(store, || async {
        let user =
            load::<UserAggregate>(store, stream_of::<UserAggregate>(user_id), ctx.command_id)
                .await?;
        if let Some(done) = crate::handler::replayed(&[&user.caused_by_command]) {
            return Ok(crate::handler::Attempt::Replayed(done));
        }
        let events = UserAggregate::decide(&user.state, command)?;
        let removes_admin = matches!(&user.state, UserState::Registered(u) if u.roles.contains(&Role::Admin))
            && matches!(
                command,
                UserCommand::Erase | UserCommand::RevokeRole { role: Role::Admin }
            );
        let mut writes = vec![write_for(&user, &events, ctx)?];
        // An erasure frees the address (read now, while it can still be read): registering it
        // again creates a new, unrelated account, and nothing tells anyone it was ever used.
        if let (UserCommand::Erase, UserState::Registered(u)) = (command, &user.state) {
            let reservation =
                load::<EmailReservationAggregate>(store, email_stream(&u.email), ctx.command_id)
                    .await?;
            let released = EmailReservationAggregate::decide(
                &reservation.state,
                &EmailReservationCommand::Release { user_id },
            )?;
            if !released.is_empty() {
                writes.push(write_for(&reservation, &released, ctx)?);
            }
        }
        if removes_admin {
            let witness = ctx
                .actor
                .strip_prefix("user:")
                .and_then(|id| Uuid::parse_str(id).ok())
                .map(UserId)
                .ok_or(UserError::LastAdmin)?;
            if witness == user_id {
                return Err(UserError::SelfRemoval.into());
            }
            let other =
                load::<UserAggregate>(store, stream_of::<UserAggregate>(witness), Uuid::nil())
                    .await?;
            match &other.state {
                UserState::Registered(u) if !u.erased && u.roles.contains(&Role::Admin) => {}
                _ => return Err(UserError::LastAdmin.into()),
            }
            writes.push(tessera_log::store::StreamWrite::guard(
                other.stream.clone(),
                other.expected(),
            ));
        }
        Ok(crate::handler::Attempt::Append(writes))
    })
    .await
}

/// Sets the language of `user_id`'s messages and whether they receive the optional ones (the
/// account page, and the one-click unsubscribe link every optional message carries).
pub async fn set_notification_preferences(
    store: &dyn EventStore,
    user_id: UserId,
    locale: tessera_domain::user::Locale,
    marketing: bool,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    execute::<UserAggregate>(
        store,
        stream_of::<UserAggregate>(user_id),
        &UserCommand::SetNotificationPreferences { locale, marketing },
        ctx,
    )
    .await
}

/// Changes what is given of `user_id`'s profile: display name, phone number (`Some(None)`
/// removes it). One append; nothing when nothing changes.
pub async fn edit_profile(
    store: &dyn EventStore,
    user_id: UserId,
    display_name: Option<String>,
    phone: Option<Option<String>>,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    execute::<UserAggregate>(
        store,
        stream_of::<UserAggregate>(user_id),
        &UserCommand::EditProfile {
            display_name,
            phone,
        },
        ctx,
    )
    .await
}

/// Sets a new password (`password_hash`, from [`hash_password`]). With `current`, it must be
/// the present one (a signed-in user changing it); without, the caller proved otherwise who
/// they are (a reset link). Every session ends but `kept_session` (the one that changed it).
pub async fn change_password(
    store: &dyn EventStore,
    user_id: UserId,
    current: Option<String>,
    password_hash: String,
    kept_session: Option<Uuid>,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    if let Some(current) = current {
        let user = current_user(store, user_id).await?;
        if !verify_password(current, user.password_hash).await {
            return Err(UserError::WrongPassword.into());
        }
    }
    execute::<UserAggregate>(
        store,
        stream_of::<UserAggregate>(user_id),
        &UserCommand::ChangePassword {
            password_hash,
            kept_session,
            now: ctx.now,
        },
        ctx,
    )
    .await
}

/// Suspends (or, with `suspend == false`, reinstates) a user; an admin command with a reason.
pub async fn set_suspended(
    store: &dyn EventStore,
    user_id: UserId,
    suspend: bool,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    let Some(reason) = ctx.reason.as_deref().filter(|r| !r.trim().is_empty()) else {
        return Err(CommandError::ReasonRequired);
    };
    let command = if suspend {
        UserCommand::Suspend {
            reason: reason.to_owned(),
        }
    } else {
        UserCommand::Unsuspend
    };
    execute::<UserAggregate>(store, stream_of::<UserAggregate>(user_id), &command, ctx).await
}

/// Saves a published listing on `user_id`'s wishlist (or, with `save == false`, takes it off;
/// a listing no longer published can always be taken off). Saving twice writes nothing.
pub async fn wish(
    store: &dyn EventStore,
    user_id: UserId,
    listing_id: tessera_domain::values::ListingId,
    save: bool,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    use tessera_domain::listing::{ListingAggregate, ListingState};
    if save {
        let listing = load::<ListingAggregate>(
            store,
            stream_of::<ListingAggregate>(listing_id),
            Uuid::nil(),
        )
        .await?;
        if !matches!(listing.state, ListingState::Published(l) if !l.retired) {
            return Err(CommandError::NotFound {
                what: "listing",
                id: listing_id.to_string(),
            });
        }
    }
    let command = if save {
        UserCommand::SaveListing { listing_id }
    } else {
        UserCommand::UnsaveListing { listing_id }
    };
    execute::<UserAggregate>(store, stream_of::<UserAggregate>(user_id), &command, ctx).await
}

/// Confirms `user`'s address `email` (its link was opened). Refused if the account has another
/// address since; a second confirmation writes nothing.
pub async fn verify_email(
    store: &dyn EventStore,
    user: UserId,
    email: &Email,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    execute::<UserAggregate>(
        store,
        stream_of::<UserAggregate>(user),
        &UserCommand::VerifyEmail {
            email: email.clone(),
        },
        ctx,
    )
    .await
}

/// Gives `user` the address `email`, unconfirmed, in one append with the address reservations:
/// the new address's (refused if it is taken) and the release of the old one.
pub async fn change_email(
    store: &dyn EventStore,
    user: UserId,
    email: &str,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    let email = new_address(email)?;
    crate::handler::decide_and_append(store, || {
        let email = email.clone();
        async move {
            let loaded =
                load::<UserAggregate>(store, stream_of::<UserAggregate>(user), ctx.command_id)
                    .await?;
            if let Some(done) = crate::handler::replayed(&[&loaded.caused_by_command]) {
                return Ok(crate::handler::Attempt::Replayed(done));
            }
            let UserState::Registered(u) = &loaded.state else {
                return Err(UserError::NotRegistered.into());
            };
            let old = u.email.clone();
            let events = UserAggregate::decide(
                &loaded.state,
                &UserCommand::ChangeEmail {
                    email: email.clone(),
                },
            )?;
            if events.is_empty() {
                return Ok(crate::handler::Attempt::Replayed(Executed {
                    position: loaded.last_position,
                    replayed: true,
                }));
            }
            let new =
                load::<EmailReservationAggregate>(store, email_stream(&email), ctx.command_id)
                    .await?;
            let reserved = EmailReservationAggregate::decide(
                &new.state,
                &EmailReservationCommand::Reserve { user_id: user },
            )?;
            let old = load::<EmailReservationAggregate>(store, email_stream(&old), ctx.command_id)
                .await?;
            let released = EmailReservationAggregate::decide(
                &old.state,
                &EmailReservationCommand::Release { user_id: user },
            )?;
            Ok(crate::handler::Attempt::Append(vec![
                write_for(&loaded, &events, ctx)?,
                write_for(&new, &reserved, ctx)?,
                write_for(&old, &released, ctx)?,
            ]))
        }
    })
    .await
}
