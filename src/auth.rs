//! Client authentication: HS256 JWTs whose `sub` is the user id, and the room
//! permissions that come with them.
//!
//! `exp` is enforced with no leeway when present; `nbf` likewise. `aud` is
//! not checked: Herald has no audience of its own to compare it with. A
//! `sub` is a user id a client cannot mistake or forge: 1 to 256 bytes, no
//! control character, and not in the `anon:` space of anonymous
//! connections. A token whose header has a `crit` list is refused, since
//! Herald understands no extension a token could make critical (RFC 7515,
//! 4.1.11).
//!
//! The optional `rooms` claim lists patterns (`*` matches any run of
//! characters) that replace the default rule, which lets a user join every
//! room. Either way, `user:<id>` rooms are private: a user may always join
//! their own, `user:<sub>`, and never another user's, whatever the claim
//! says (`["*"]` included).

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::ids::UserId;

/// Why a token was refused. Clients only ever see "invalid token".
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no jwt secret is configured")]
    NoSecret,
    #[error("token rejected: {0}")]
    Jwt(jsonwebtoken::errors::Error),
    #[error("token has an empty, over-long, control-character or anon: sub")]
    BadSubject,
    #[error("token header makes extensions critical: {0:?}")]
    Critical(Vec<String>),
    #[error("token expired")]
    Expired,
}

/// Who a connection is, and which rooms it may join.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: UserId,
    pub rooms: Rooms,
}

/// The rooms an identity may join.
#[derive(Debug, Clone, PartialEq)]
pub enum Rooms {
    /// Every room (but other users' `user:<id>` rooms).
    Default,
    /// Only rooms matching one of these patterns (and the user's own `user:<id>` room).
    Patterns(Arc<[Box<str>]>),
}

impl Identity {
    /// The anonymous identity of a connection when `auth.required = false`.
    pub fn anonymous(conn: &str) -> Self {
        Self { user: format!("{ANONYMOUS}{conn}").into(), rooms: Rooms::Default }
    }

    /// Whether this identity may join `room` (already a valid room name).
    pub fn may_join(&self, room: &str) -> bool {
        if let Some(owner) = room.strip_prefix(USER_ROOM) {
            return owner == &*self.user;
        }
        match &self.rooms {
            Rooms::Patterns(patterns) => patterns.iter().any(|p| glob_match(p, room)),
            Rooms::Default => true,
        }
    }
}

/// The prefix of a user's private room.
const USER_ROOM: &str = "user:";

/// Whether `sub` may name a user: 1 to [`crate::protocol::MAX_USER_LEN`]
/// bytes, no control character, and not an anonymous connection's id.
fn valid_subject(sub: &str) -> bool {
    !sub.is_empty()
        && sub.len() <= crate::protocol::MAX_USER_LEN
        && !sub.chars().any(char::is_control)
        && !sub.starts_with(ANONYMOUS)
}

/// The prefix of anonymous connections' user ids.
const ANONYMOUS: &str = "anon:";

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// Checked again here to the millisecond: the library compares whole
    /// seconds, which would accept a token through the second its `exp` names.
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    rooms: Option<Vec<Box<str>>>,
}

/// Verifies client tokens against the configured secret.
pub struct Authenticator {
    key: Option<DecodingKey>,
    /// The same secret for signing (the browser demo's tokens).
    signing: Option<jsonwebtoken::EncodingKey>,
    validation: Validation,
}

impl Authenticator {
    /// An authenticator for HS256 tokens signed with `secret`; an empty secret verifies nothing.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["sub"]);
        let key = (!secret.is_empty()).then(|| DecodingKey::from_secret(secret.as_bytes()));
        let signing = (!secret.is_empty()).then(|| jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()));
        Self { key, signing, validation }
    }

    /// A token for `user`, valid for `secs`, that [`Self::verify`] accepts;
    /// `None` without a secret.
    pub fn sign(&self, user: &str, secs: u64) -> Option<String> {
        let key = self.signing.as_ref()?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        let claims = serde_json::json!({ "sub": user, "iat": now, "exp": now + secs });
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, key).ok()
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let key = self.key.as_ref().ok_or(AuthError::NoSecret)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(AuthError::Jwt)?.claims;
        if let Some(critical) = jsonwebtoken::decode_header(token).map_err(AuthError::Jwt)?.crit {
            return Err(AuthError::Critical(critical));
        }
        if !valid_subject(&claims.sub) {
            return Err(AuthError::BadSubject);
        }
        if let Some(exp) = claims.exp {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            if exp <= now {
                return Err(AuthError::Expired);
            }
        }
        let rooms = match claims.rooms {
            Some(patterns) => Rooms::Patterns(patterns.into()),
            None => Rooms::Default,
        };
        Ok(Identity { user: claims.sub.into(), rooms })
    }
}

/// Matches `text` against `pattern`, where `*` stands for any run of characters
/// (including none). Iterative with one backtrack point, so linear-ish and
/// never recursive whatever the pattern.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn now() -> u64 {
        crate::protocol::now_ms() / 1000
    }

    #[test]
    fn globs() {
        assert!(glob_match("chat:*", "chat:"));
        assert!(glob_match("chat:*", "chat:general"));
        assert!(!glob_match("chat:*", "chatx"));
        assert!(glob_match("lobby", "lobby"));
        assert!(!glob_match("lobby", "lobby2"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("*:*", "x:y"));
    }

    #[test]
    fn verifies_sub_exp_and_rooms() {
        let auth = Authenticator::new("s3cret");
        let id = auth.verify(&token(json!({"sub":"alice","exp":now()+60}), "s3cret")).unwrap();
        assert_eq!(&*id.user, "alice");
        assert_eq!(id.rooms, Rooms::Default);
        let id = auth.verify(&token(json!({"sub":"bob","rooms":["chat:*","lobby"]}), "s3cret")).unwrap();
        assert!(id.may_join("lobby") && id.may_join("chat:x") && !id.may_join("other"));
        assert!(auth.verify(&token(json!({"sub":"alice","exp":now()-5}), "s3cret")).is_err());
        // Not even during the second `exp` names.
        let error = auth.verify(&token(json!({"sub":"alice","exp":now()}), "s3cret")).unwrap_err();
        assert!(matches!(error, AuthError::Expired | AuthError::Jwt(_)), "{error:?}");
        assert!(auth.verify(&token(json!({"sub":"alice","nbf":now()+60}), "s3cret")).is_err());
        assert!(auth.verify(&token(json!({"sub":"alice"}), "other")).is_err());
        assert!(auth.verify(&token(json!({"exp":now()+60}), "s3cret")).is_err());
        assert!(auth.verify(&token(json!({"sub":""}), "s3cret")).is_err());
        assert!(auth.verify(&token(json!({"sub":"a","rooms":"lobby"}), "s3cret")).is_err());
        assert!(auth.verify("garbage").is_err());
        assert!(Authenticator::new("").verify(&token(json!({"sub":"a"}), "")).is_err());
    }

    #[test]
    fn a_rejected_token_says_why_once() {
        let error = Authenticator::new("s3cret").verify("garbage").unwrap_err();
        assert!(matches!(error, AuthError::Jwt(_)), "{error:?}");
        assert!(std::error::Error::source(&error).is_none(), "the cause is in the message, not also a source");
        assert!(error.to_string().starts_with("token rejected: "), "{error}");
        assert!(error.to_string().len() > "token rejected: ".len(), "{error}");
    }

    #[test]
    fn subjects_a_client_could_mistake_or_forge_are_refused() {
        let auth = Authenticator::new("s3cret");
        let long = "x".repeat(257);
        for sub in ["", "a\u{0}b", "a\nb", "tab\there", "del\u{7f}", "c1\u{85}", "anon:x-1", "anon:", long.as_str()] {
            let error = auth.verify(&token(json!({"sub": sub}), "s3cret")).unwrap_err();
            assert!(matches!(error, AuthError::BadSubject), "{sub:?}: {error:?}");
        }
        for sub in ["alice", "anon", "anonymous:1", "ünïcödé", "user name", &"x".repeat(256)] {
            assert!(auth.verify(&token(json!({"sub": sub}), "s3cret")).is_ok(), "{sub:?}");
        }
    }

    #[test]
    fn a_critical_header_is_refused_and_an_audience_is_not() {
        let auth = Authenticator::new("s3cret");
        let key = EncodingKey::from_secret(b"s3cret");
        for critical in [vec!["exp".to_owned()], vec!["b64".to_owned()], vec![]] {
            let header = Header { crit: Some(critical.clone()), ..Header::default() };
            let token = encode(&header, &json!({"sub":"alice"}), &key).unwrap();
            let error = auth.verify(&token).unwrap_err();
            assert!(matches!(error, AuthError::Critical(ref c) if *c == critical), "{error:?}");
        }
        let id = auth.verify(&token(json!({"sub":"alice","aud":"some-app"}), "s3cret")).unwrap();
        assert_eq!(&*id.user, "alice");
    }

    #[test]
    fn user_rooms_are_private_whatever_the_claim() {
        let auth = Authenticator::new("s3cret");
        for rooms in [json!(["*"]), json!(["user:*"]), json!(["*:*"]), json!(["user:bob"]), json!(["lobby"]), json!([])] {
            let alice = auth.verify(&token(json!({"sub":"alice","rooms":rooms}), "s3cret")).unwrap();
            assert!(!alice.may_join("user:bob"), "{rooms}");
            assert!(alice.may_join("user:alice"), "{rooms}");
        }
        let wide = auth.verify(&token(json!({"sub":"alice","rooms":["*"]}), "s3cret")).unwrap();
        assert!(wide.may_join("users") && wide.may_join("chat:1"));
    }

    #[test]
    fn private_user_rooms() {
        let alice = Identity { user: "alice".into(), rooms: Rooms::Default };
        assert!(alice.may_join("user:alice"));
        assert!(!alice.may_join("user:bob"));
        assert!(alice.may_join("users"));
        let anon = Identity::anonymous("n1-4");
        assert_eq!(&*anon.user, "anon:n1-4");
        assert!(anon.may_join("user:anon:n1-4") && !anon.may_join("user:alice"));
    }
}
