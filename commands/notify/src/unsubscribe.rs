//! Signed one-click unsubscribe tokens: `<user id, hex>.<HMAC-SHA256, first 16 bytes, hex>`.
//! The key is the platform's (derived from its token secret by the API); a token names the
//! user and proves the platform made it, so the link needs no login (RFC 8058).

use aws_lc_rs::hmac;
use tessera_domain::values::UserId;
use uuid::Uuid;

const PURPOSE: &[u8] = b"tessera-unsubscribe-v1:";

fn tag(key: &[u8], user: UserId) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut data = PURPOSE.to_vec();
    data.extend_from_slice(user.0.as_bytes());
    hex::encode(&hmac::sign(&key, &data).as_ref()[..16])
}

/// The token for `user`'s unsubscribe link.
pub fn token(key: &[u8], user: UserId) -> String {
    format!("{}.{}", user.0.simple(), tag(key, user))
}

/// The user a token names, if the platform made it.
pub fn verify(key: &[u8], token: &str) -> Option<UserId> {
    let (id, mac) = token.split_once('.')?;
    let user = UserId(Uuid::try_parse(id).ok()?);
    let expected = tag(key, user);
    // Constant time: a guessed tag learns nothing from how fast it is refused.
    let same = expected.len() == mac.len()
        && expected
            .bytes()
            .zip(mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_user_and_nothing_else() {
        let user = UserId(Uuid::from_u128(7));
        let t = token(b"key", user);
        assert_eq!(verify(b"key", &t), Some(user));
        assert_eq!(verify(b"other key", &t), None);
        let forged = format!("{}.{}", Uuid::from_u128(8).simple(), &t[33..]);
        assert_eq!(verify(b"key", &forged), None);
        assert_eq!(verify(b"key", "garbage"), None);
    }
}
