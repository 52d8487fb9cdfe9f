//! Tokens for `--secret`: HS256 JWTs whose subject names the connection, so a
//! server that authenticates shows each load connection as its own user.

use serde::Serialize;

#[derive(Serialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// The user id of connection `index`.
pub fn subject(index: usize) -> String {
    format!("load-{index}")
}

/// A token for connection `index`, valid for an hour.
pub fn mint(secret: &str, index: usize) -> Result<String, String> {
    let claims = Claims { sub: subject(index), exp: crate::now_us() / 1_000_000 + 3600 };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("token: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_verifies_with_the_secret_and_names_the_connection() {
        let token = mint("s3cret", 7).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "load-7");
        assert!(jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"other"),
            &validation
        )
        .is_err());
    }
}
