//! Tokens checked against the store (only their hashes are kept; see `estate_crm_store::credentials`
//! for how tokens and passwords are made and hashed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estate_crm_store::{Store, User};

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

pub use estate_crm_store::credentials::{hash_token, new_token};

/// Hashes a password with argon2 and a random salt.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    estate_crm_store::credentials::hash_password(password)
        .map_err(|err| ApiError::internal(&std::io::Error::other(err)))
}
