//! Signed address-confirmation links: `<user id, hex>.<expiry, unix seconds>.<HMAC-SHA256,
//! first 16 bytes, hex>` over the user, the address and the expiry, with the platform's link
//! key (the unsubscribe links' key, under another purpose). The address is in the signature,
//! not in the token: a link sent to an address the account no longer has confirms nothing.

use aws_lc_rs::hmac;
use chrono::{DateTime, TimeDelta, Utc};
use tessera_domain::values::UserId;
use uuid::Uuid;

const PURPOSE: &[u8] = b"tessera-verify-email-v1:";

/// How long a confirmation link works.
pub const TTL: TimeDelta = TimeDelta::days(7);

fn tag(key: &[u8], user: UserId, email: &str, expires: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut data = PURPOSE.to_vec();
    data.extend_from_slice(user.0.as_bytes());
    data.extend_from_slice(&expires.to_be_bytes());
    data.extend_from_slice(email.as_bytes());
    hex::encode(&hmac::sign(&key, &data).as_ref()[..16])
}

/// The token of `user`'s link confirming `email`, working until `expires`.
pub fn token(key: &[u8], user: UserId, email: &str, expires: DateTime<Utc>) -> String {
    let at = expires.timestamp();
    format!("{}.{at}.{}", user.0.simple(), tag(key, user, email, at))
}

/// The user a token names (before its signature is checked: that needs their address).
pub fn user_of(token: &str) -> Option<UserId> {
    let (id, _) = token.split_once('.')?;
    Uuid::try_parse(id).ok().map(UserId)
}

/// Whether `token` is the platform's link for `user`'s address `email`, still working at `now`.
pub fn verify(key: &[u8], token: &str, user: UserId, email: &str, now: DateTime<Utc>) -> bool {
    let mut parts = token.split('.');
    let (Some(id), Some(at), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(at) = at.parse::<i64>() else {
        return false;
    };
    if Uuid::try_parse(id).ok() != Some(user.0) || now.timestamp() >= at {
        return false;
    }
    let expected = tag(key, user, email, at);
    // Constant time: a guessed tag learns nothing from how fast it is refused.
    expected.len() == mac.len()
        && expected
            .bytes()
            .zip(mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_confirms_its_address_for_its_user_until_it_expires() {
        let user = UserId(Uuid::from_u128(7));
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let t = token(b"key", user, "ada@example.org", now + TTL);
        assert_eq!(user_of(&t), Some(user));
        assert!(verify(b"key", &t, user, "ada@example.org", now));
        assert!(
            !verify(b"key", &t, user, "ada@example.org", now + TTL),
            "expired"
        );
        assert!(
            !verify(b"key", &t, user, "new@example.org", now),
            "another address"
        );
        assert!(
            !verify(b"other", &t, user, "ada@example.org", now),
            "another key"
        );
        let other = UserId(Uuid::from_u128(8));
        assert!(
            !verify(b"key", &t, other, "ada@example.org", now),
            "another user"
        );
        let later = t.replacen(
            &format!(".{}.", (now + TTL).timestamp()),
            &format!(".{}.", (now + TTL * 2).timestamp()),
            1,
        );
        assert!(
            !verify(b"key", &later, user, "ada@example.org", now + TTL),
            "a stretched expiry"
        );
        assert!(!verify(b"key", "garbage", user, "ada@example.org", now));
    }
}
