//! Signatures carried by every webhook that has a secret.
//!
//! Two headers sign the same body with the same key (the secret's bytes):
//! `X-CRM-Signature` is the plain hex HMAC-SHA256 of the body that receivers
//! written for the original product check (PHP's `hash_hmac('sha256', $body,
//! $secret)`), and `webhook-signature` follows Standard Webhooks, which signs
//! `{id}.{timestamp}.{body}` so that official libraries can verify a delivery
//! and reject replays. Both are computed here and nowhere else, so the two can
//! never disagree about the key.
//!
//! [`verify`] is the receiving side, used by `estate-crm listen` and `estate-crm verify`: it
//! recomputes the same MACs and compares them in constant time (`Mac::verify_slice`), so a
//! receiver's answer time says nothing about how much of a forged signature was right.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix Standard Webhooks libraries expect in front of a base64 secret.
const STANDARD_SECRET_PREFIX: &str = "whsec_";

/// The only signature scheme version Standard Webhooks defines for symmetric keys.
const STANDARD_SIGNATURE_VERSION: &str = "v1";

/// The `X-CRM-Signature` value: HMAC-SHA256 of `body` keyed by `secret`,
/// as 64 lowercase hex characters without any prefix.
pub fn crm_signature(secret: &[u8], body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret, &[body]))
}

/// The `webhook-signature` value: one `v1,<base64 HMAC-SHA256>` entry per
/// secret, of `{webhook_id}.{timestamp}.{body}`, separated by single spaces.
///
/// Several secrets are signed while one is being rotated, so that receivers
/// holding either the old or the new secret accept the delivery.
pub fn standard_signature(secrets: &[&[u8]], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let prefix = format!("{webhook_id}.{timestamp}.");
    // Written into one buffer: this runs for every attempt.
    let mut signature = String::with_capacity(secrets.len() * STANDARD_ENTRY_LEN);
    for secret in secrets {
        if !signature.is_empty() {
            signature.push(' ');
        }
        signature.push_str(STANDARD_SIGNATURE_VERSION);
        signature.push(',');
        BASE64.encode_string(hmac_sha256(secret, &[prefix.as_bytes(), body]), &mut signature);
    }
    signature
}

/// The length of one `v1,<base64 of 32 bytes>` entry and the space before the next.
const STANDARD_ENTRY_LEN: usize = 3 + 44 + 1;

/// The secret as Standard Webhooks libraries take it: `whsec_` + base64(secret).
pub fn standard_webhooks_secret(secret: &[u8]) -> String {
    format!("{STANDARD_SECRET_PREFIX}{}", BASE64.encode(secret))
}

/// The oldest or newest a `webhook-timestamp` may be, as the Standard Webhooks libraries accept.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// The keys a secret given by a person may stand for: a `whsec_` secret is the base64 of the key
/// (as the Standard Webhooks libraries read it), any other text is the key's UTF-8 bytes (as
/// `X-CRM-Signature` receivers use it). A `whsec_`-looking text that is also a plain secret is
/// tried both ways.
pub fn secret_keys(text: &str) -> Vec<Vec<u8>> {
    let mut keys = Vec::with_capacity(2);
    if let Some(encoded) = text.strip_prefix(STANDARD_SECRET_PREFIX)
        && let Ok(key) = BASE64.decode(encoded)
    {
        keys.push(key);
    }
    keys.push(text.as_bytes().to_vec());
    keys
}

/// What a received webhook carries to check it by; each header is `None` when it was not sent.
#[derive(Debug, Clone, Default)]
pub struct Signed<'a> {
    /// `webhook-id`.
    pub webhook_id: Option<&'a str>,
    /// `webhook-timestamp`, Unix seconds as text.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`: space-separated `v1,<base64>` entries.
    pub signature: Option<&'a str>,
    /// `X-CRM-Signature`: hex.
    pub crm_signature: Option<&'a str>,
    /// `X-CRM-Signature-Previous`: hex, sent while a replaced secret still signs.
    pub crm_signature_previous: Option<&'a str>,
    /// The exact body bytes.
    pub body: &'a [u8],
}

/// The verdict on each signature of a webhook, for one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// `webhook-signature`: which entry (1-based) holds, `Some(None)` when none does, `None` when
    /// it was not sent or could not be checked (no id or timestamp).
    pub standard: Option<Option<usize>>,
    /// `X-CRM-Signature` holds; `None` when not sent.
    pub crm: Option<bool>,
    /// `X-CRM-Signature-Previous` holds; `None` when not sent.
    pub crm_previous: Option<bool>,
    /// How far `webhook-timestamp` is from now, in seconds; `None` when absent or not a number.
    pub age_secs: Option<i64>,
}

impl Verification {
    /// Whether the timestamp is within [`TIMESTAMP_TOLERANCE_SECS`] of now, either way.
    pub fn timestamp_fresh(&self) -> bool {
        self.age_secs.is_some_and(|age| age.abs() <= TIMESTAMP_TOLERANCE_SECS)
    }

    /// Whether the webhook is authentic and fresh: at least one signature was checked, every
    /// signature sent holds (for `X-CRM-Signature`, either it or `X-CRM-Signature-Previous`: a
    /// receiver holding the replaced secret matches the latter), and when `webhook-signature` was
    /// checked its timestamp is fresh, as the official libraries require.
    pub fn is_valid(&self) -> bool {
        let standard_ok = match self.standard {
            None => true,
            Some(entry) => entry.is_some() && self.timestamp_fresh(),
        };
        let crm_ok = match (self.crm, self.crm_previous) {
            (None, None) => true,
            (current, previous) => current == Some(true) || previous == Some(true),
        };
        let any_checked = self.standard.is_some() || self.crm.is_some() || self.crm_previous.is_some();
        any_checked && standard_ok && crm_ok
    }
}

/// Checks every signature `signed` carries against each of `keys` (see [`secret_keys`]); a
/// signature holds when it holds for one of them. `now` is Unix seconds.
pub fn verify(keys: &[Vec<u8>], signed: &Signed<'_>, now: i64) -> Verification {
    let standard = match (signed.signature, signed.webhook_id, signed.timestamp) {
        (Some(header), Some(id), Some(timestamp)) => {
            Some(matching_standard_entry(keys, header, id, timestamp, signed.body))
        }
        _ => None,
    };
    let check_hex = |given: &str| keys.iter().any(|key| hex_signature_holds(key, signed.body, given));
    Verification {
        standard,
        crm: signed.crm_signature.map(check_hex),
        crm_previous: signed.crm_signature_previous.map(check_hex),
        age_secs: signed.timestamp.and_then(|t| t.trim().parse::<i64>().ok()).map(|t| now - t),
    }
}

/// The 1-based index of the first `v1,` entry of `header` that holds for one of `keys`.
fn matching_standard_entry(keys: &[Vec<u8>], header: &str, id: &str, timestamp: &str, body: &[u8]) -> Option<usize> {
    let prefix = format!("{id}.{timestamp}.");
    header.split_whitespace().enumerate().find_map(|(index, entry)| {
        let (version, encoded) = entry.split_once(',')?;
        let given = BASE64.decode(encoded).ok().filter(|_| version == STANDARD_SIGNATURE_VERSION)?;
        keys.iter().any(|key| mac_matches(key, &[prefix.as_bytes(), body], &given)).then_some(index + 1)
    })
}

fn hex_signature_holds(key: &[u8], body: &[u8], given: &str) -> bool {
    hex::decode(given.trim()).is_ok_and(|given| mac_matches(key, &[body], &given))
}

/// Constant-time comparison of the MAC of `parts` with `given`.
fn mac_matches(key: &[u8], parts: &[&[u8]], given: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(given).is_ok()
}

/// HMAC-SHA256 of the concatenation of `parts`, fed piece by piece so the
/// body is never copied to prepend the Standard Webhooks prefix.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC hashes keys longer than a block and pads shorter ones, so every key
    // length is valid and this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values below were computed independently with Python:
    //   hmac.new(key, msg, hashlib.sha256).hexdigest() / base64.b64encode(...digest())

    #[test]
    fn crm_signature_matches_a_known_vector() {
        assert_eq!(
            crm_signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn standard_signature_matches_a_known_vector() {
        assert_eq!(
            standard_signature(&[b"whsec-test-secret"], "msg_1", 1_700_000_000, br#"{"a":1}"#),
            "v1,yHdYsRj+2Gy6OObDjIfetKV/VV6++5AZEUmCj4B+cCk="
        );
    }

    #[test]
    fn standard_signature_lists_every_secret_in_order() {
        assert_eq!(
            standard_signature(&[b"whsec-test-secret", b"old"], "msg_1", 1_700_000_000, br#"{"a":1}"#),
            "v1,yHdYsRj+2Gy6OObDjIfetKV/VV6++5AZEUmCj4B+cCk= \
             v1,RWnFyAk4VcKBxj/RA8fx+Fgcf5bN9a2DgkGot7smX7g="
        );
    }

    #[test]
    fn standard_webhooks_secret_is_prefixed_base64() {
        assert_eq!(standard_webhooks_secret(b"whsec-test-secret"), "whsec_d2hzZWMtdGVzdC1zZWNyZXQ=");
    }

    #[test]
    fn verify_checks_each_signature_against_the_secret() {
        let (old, new) = (b"old secret".as_slice(), b"new secret".as_slice());
        let body = br#"{"event":"deal.won"}"#;
        let now = 1_700_000_000;
        let standard = standard_signature(&[new, old], "msg_1", now, body);
        let (crm, crm_previous) = (crm_signature(new, body), crm_signature(old, body));
        let timestamp = now.to_string();
        let signed = Signed {
            webhook_id: Some("msg_1"),
            timestamp: Some(&timestamp),
            signature: Some(&standard),
            crm_signature: Some(&crm),
            crm_signature_previous: Some(&crm_previous),
            body,
        };

        #[track_caller]
        fn check(
            secret: &str,
            signed: &Signed<'_>,
            now: i64,
            expected: (Option<Option<usize>>, Option<bool>, Option<bool>, bool),
        ) {
            let verdict = verify(&secret_keys(secret), signed, now);
            assert_eq!((verdict.standard, verdict.crm, verdict.crm_previous, verdict.is_valid()), expected, "{secret}");
        }
        check("new secret", &signed, now, (Some(Some(1)), Some(true), Some(false), true));
        check("old secret", &signed, now, (Some(Some(2)), Some(false), Some(true), true));
        check(&standard_webhooks_secret(old), &signed, now, (Some(Some(2)), Some(false), Some(true), true));
        check("stranger", &signed, now, (Some(None), Some(false), Some(false), false));
        // Stale: the signatures hold, the time does not.
        check("new secret", &signed, now + 301, (Some(Some(1)), Some(true), Some(false), false));
        check("new secret", &signed, now - 300, (Some(Some(1)), Some(true), Some(false), true));
        // Tampered body.
        let tampered = Signed { body: br#"{"event":"deal.lost"}"#, ..signed.clone() };
        check("new secret", &tampered, now, (Some(None), Some(false), Some(false), false));
        // Nothing to check is not valid.
        check("new secret", &Signed { body, ..Signed::default() }, now, (None, None, None, false));
    }

    #[test]
    fn secret_keys_read_whsec_as_base64_and_anything_as_bytes() {
        assert_eq!(secret_keys("plain"), vec![b"plain".to_vec()]);
        assert_eq!(secret_keys("whsec_cGxhaW4="), vec![b"plain".to_vec(), b"whsec_cGxhaW4=".to_vec()]);
        assert_eq!(secret_keys("whsec_%%%"), vec![b"whsec_%%%".to_vec()]);
    }

    #[test]
    fn standard_signature_verifies_with_the_standardwebhooks_crate() {
        let (old, new) = (b"old secret".as_slice(), b"new secret".as_slice());
        let body = br#"{"event":"contact.created","data":{}}"#;
        let id = "0190b6c2-6a4e-7c1e-9f00-000000000001";
        let timestamp = chrono::Utc::now().timestamp();
        let signature = standard_signature(&[old, new], id, timestamp, body);

        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", id.parse().expect("valid header"));
        headers.insert("webhook-timestamp", timestamp.into());
        headers.insert("webhook-signature", signature.parse().expect("valid header"));

        for secret in [old, new] {
            let webhook = standardwebhooks::Webhook::new(&standard_webhooks_secret(secret))
                .expect("whsec secret is valid base64");
            webhook.verify(body, &headers).expect("standardwebhooks accepts the signature");
        }
        let stranger =
            standardwebhooks::Webhook::new(&standard_webhooks_secret(b"other")).expect("whsec secret is valid base64");
        assert!(stranger.verify(body, &headers).is_err());
    }
}
