//! The API key check: `Authorization: Bearer <api.key>`, compared in constant
//! time so response timing tells a caller nothing about how much of a guess
//! was right.

use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// Checks the request's bearer key against `key` (empty: the API is disabled).
pub(crate) fn check(key: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::Disabled);
    }
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or(ApiError::Unauthorized)?;
    if same_key(given.as_bytes(), key.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The credentials of a `Bearer` authorization value (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim_start())
}

/// Compares in time that depends on the lengths only, never on where the
/// first differing byte is.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    given.ct_eq(key).into()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn accepts_only_the_exact_key() {
        assert!(check("k3y", &headers("Bearer k3y")).is_ok());
        assert!(check("k3y", &headers("bearer k3y")).is_ok());
        for wrong in ["Bearer k3", "Bearer k3yy", "Bearer K3Y", "Bearer ", "Basic k3y", "k3y", ""] {
            assert!(matches!(check("k3y", &headers(wrong)), Err(ApiError::Unauthorized)), "{wrong:?}");
        }
        assert!(matches!(check("k3y", &HeaderMap::new()), Err(ApiError::Unauthorized)));
    }

    #[test]
    fn no_configured_key_disables_everything() {
        assert!(matches!(check("", &headers("Bearer ")), Err(ApiError::Disabled)));
        assert!(matches!(check("", &HeaderMap::new()), Err(ApiError::Disabled)));
    }

    #[test]
    fn a_prefix_of_the_key_is_not_the_key() {
        assert!(!same_key(b"", b"abc"));
        assert!(!same_key(b"ab", b"abc"));
        assert!(!same_key(b"abcd", b"abc"));
        assert!(same_key(b"abc", b"abc"));
    }
}
