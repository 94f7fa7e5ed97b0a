//! Tokens: how they are made, stored (only as hashes) and checked.
//!
//! A token is 32 random bytes, so a single SHA-256 is enough to store it safely (unlike a password,
//! it cannot be guessed from a dictionary); looking the hash up means the token itself is never
//! compared byte by byte. Passwords use argon2.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use estate_crm_store::{Store, User};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// How long a checked token is remembered. Revoking a token through this server forgets it at once.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// How many checked tokens are remembered at most.
const CACHE_SIZE: usize = 10_000;

/// Checks tokens against the store, remembering recent answers.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: Arc<Mutex<HashMap<String, (User, Instant)>>>,
}

impl Authenticator {
    /// Checks tokens in this store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Authenticator { store, cache: Arc::default() }
    }

    /// The user a token belongs to, if any.
    pub async fn authenticate(&self, token: &str) -> Result<Option<User>, ApiError> {
        let hash = hash_token(token);
        if let Some(user) = self.cached(&hash) {
            return Ok(Some(user));
        }
        let user = self.store.find_token(&hash).await?;
        if let Some(user) = &user {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_SIZE {
                cache.clear();
            }
            cache.insert(hash, (user.clone(), Instant::now()));
        }
        Ok(user)
    }

    fn cached(&self, hash: &str) -> Option<User> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(hash).filter(|(_, at)| at.elapsed() < CACHE_TTL).map(|(user, _)| user.clone())
    }

    /// Forgets every remembered token, after one was revoked.
    pub fn forget_all(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A new random token: 32 bytes, URL-safe base64, behind a prefix that says what it is.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("ecrm_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// How a token is stored.
pub fn hash_token(token: &str) -> String {
    hex_lower(&Sha256::digest(token.as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes a password with argon2 and a random salt.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt =
        SaltString::encode_b64(&salt).map_err(|err| ApiError::internal(&std::io::Error::other(err.to_string())))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| ApiError::internal(&std::io::Error::other(err.to_string())))
}
