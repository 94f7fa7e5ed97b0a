//! Signatures carried by every webhook that has a secret.
//!
//! Two headers sign the same body with the same key (the secret's bytes):
//! `X-CRM-Signature` is the plain hex HMAC-SHA256 of the body that receivers
//! written for the original product check (PHP's `hash_hmac('sha256', $body,
//! $secret)`), and `webhook-signature` follows Standard Webhooks, which signs
//! `{id}.{timestamp}.{body}` so that official libraries can verify a delivery
//! and reject replays. Both are computed here and nowhere else, so the two can
//! never disagree about the key.

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
    secrets
        .iter()
        .map(|secret| {
            let mac = hmac_sha256(secret, &[prefix.as_bytes(), body]);
            format!("{STANDARD_SIGNATURE_VERSION},{}", BASE64.encode(mac))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The secret as Standard Webhooks libraries take it: `whsec_` + base64(secret).
pub fn standard_webhooks_secret(secret: &[u8]) -> String {
    format!("{STANDARD_SECRET_PREFIX}{}", BASE64.encode(secret))
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
