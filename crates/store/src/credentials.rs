//! Tokens, passwords and new users' fields: how they are made, checked and stored, once for the API
//! and the web app.
//!
//! A token is 32 random bytes, so a single SHA-256 is enough to store it safely (unlike a password,
//! it cannot be guessed from a dictionary); looking the hash up means the token itself is never
//! compared byte by byte. Passwords use argon2 with a random salt. Session cookies are tokens too.

use base64::Engine;
use estate_crm_domain::FieldErrors;
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{NewUser, Role};

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted (argon2 hashes any length; this bounds the work).
pub const MAX_PASSWORD_CHARS: usize = 1000;

/// A new random token: 32 bytes, URL-safe base64, behind a prefix that says what it is.
pub fn new_token() -> String {
    format!("ecrm_{}", random_base64(32))
}

/// `bytes` random bytes as URL-safe base64 without padding.
pub fn random_base64(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer)
}

/// How a token is stored: its SHA-256 in lower-case hex.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes a password with argon2 and a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|err| err.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| err.to_string())
}

/// Whether `password` matches a stored argon2 hash; a hash that cannot be read matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Checks a new password's length; a password is kept exactly as typed (no trimming).
pub fn check_password(password: &str) -> Result<(), String> {
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(format!("must be a string of {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"))
    }
}

/// A new user's fields as a client sent them, checked.
#[derive(Debug, Clone)]
pub struct UserInput {
    /// The name.
    pub name: String,
    /// The email.
    pub email: String,
    /// The role.
    pub role: Role,
    /// The password, if one was given (not yet hashed).
    pub password: Option<String>,
}

impl UserInput {
    /// The user to store, its password hashed.
    pub fn into_new_user(self) -> Result<NewUser, String> {
        let password_hash = self.password.as_deref().map(hash_password).transpose()?;
        Ok(NewUser { name: self.name, email: self.email, role: self.role, password_hash })
    }
}

/// Checks a new user's JSON object: `name`, `email`, `role` (admin or agent) and an optional
/// `password`; any other field is refused.
pub fn parse_user_input(body: &Value) -> Result<UserInput, FieldErrors> {
    let Value::Object(map) = body else {
        return Err(FieldErrors::single("body", "must be a JSON object"));
    };
    let mut errors = FieldErrors::new();
    for key in map.keys().filter(|k| !["name", "email", "role", "password"].contains(&k.as_str())) {
        errors.add(key, "is not a known field");
    }
    let name = string_field(body, "name", 200, &mut errors);
    let email = string_field(body, "email", 254, &mut errors);
    let role = string_field(body, "role", 20, &mut errors);
    let password = match body.get("password") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => match check_password(p) {
            Ok(()) => Some(p.clone()),
            Err(message) => {
                errors.add("password", message);
                None
            }
        },
        Some(_) => {
            errors.add("password", check_password("").unwrap_err());
            None
        }
    };
    if name.is_none() && !errors.fields().contains_key("name") {
        errors.add("name", "is required");
    }
    if !email.as_deref().is_some_and(|e| e.contains('@')) && !errors.fields().contains_key("email") {
        errors.add("email", "must be an email address");
    }
    let role = match role.as_deref().map(Role::parse) {
        Some(Some(role)) => Some(role),
        _ => {
            errors.add("role", "must be admin or agent");
            None
        }
    };
    match (name, email, role) {
        (Some(name), Some(email), Some(role)) => errors.into_result(UserInput { name, email, role, password }),
        _ => Err(errors),
    }
}

/// A trimmed, non-empty string of at most `max` characters, if the field is there.
pub fn string_field(body: &Value, name: &str, max: usize, errors: &mut FieldErrors) -> Option<String> {
    match body.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= max => Some(s.trim().to_owned()),
        Some(_) => {
            errors.add(name, format!("must be a non-empty string of at most {max} characters"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsE", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn user_input_names_every_wrong_field() {
        let err =
            parse_user_input(&json!({"name": " ", "email": "x", "role": "boss", "password": "short", "extra": 1}))
                .unwrap_err();
        let fields: Vec<&str> = err.fields().keys().map(String::as_str).collect();
        assert_eq!(fields, ["email", "extra", "name", "password", "role"]);
        let ok = parse_user_input(&json!({"name": "Ann", "email": "ann@example.com", "role": "agent"})).unwrap();
        assert_eq!((ok.name.as_str(), ok.role, ok.password), ("Ann", Role::Agent, None));
    }
}
