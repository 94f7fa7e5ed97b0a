//! The bytes the bench sends: contact rows for the API, and the signed sample webhook that the
//! bare client posts in part 1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The secret every endpoint is created with, and that the bare client signs with.
pub const SECRET: &str = "s3cret";

/// Contacts' email is a unique key, so every contact of the run takes the next number from here.
static NEXT_CONTACT: AtomicU64 = AtomicU64::new(0);

/// Reserves `count` contact numbers and returns the first.
pub fn reserve_contacts(count: u64) -> u64 {
    NEXT_CONTACT.fetch_add(count, Ordering::Relaxed)
}

/// One contact as the API takes it. The fields are fixed strings and a number, so formatting
/// by hand is safe and keeps building a million rows cheap.
pub fn contact_row(n: u64) -> String {
    format!(
        r#"{{"first_name":"Ada","last_name":"Lovelace","email":"ada-{n}@example.com","phone":"+1 555 0100","city":"Austin","tags":["buyer"]}}"#
    )
}

/// A run of consecutive contacts sent in one bulk request, with its body built ahead of time
/// so that building JSON stays outside the timed windows.
#[derive(Debug, Clone)]
pub struct Batch {
    pub rows: u64,
    pub body: Bytes,
}

impl Batch {
    pub fn new(first: u64, rows: u64) -> Self {
        Self { rows, body: bulk_body(first, rows) }
    }
}

/// `{"create": [...]}` with `rows` contacts numbered from `first`.
pub fn bulk_body(first: u64, rows: u64) -> Bytes {
    let mut body = String::with_capacity(rows as usize * 130 + 16);
    body.push_str(r#"{"create":["#);
    for n in first..first + rows {
        if n != first {
            body.push(',');
        }
        body.push_str(&contact_row(n));
    }
    body.push_str("]}");
    Bytes::from(body)
}

/// Reserves `total` new contacts and cuts them into bulk requests of at most `per_batch` rows.
pub fn new_batches(total: u64, per_batch: u64) -> Vec<Batch> {
    let first = reserve_contacts(total);
    (0..total)
        .step_by(per_batch as usize)
        .map(|offset| Batch::new(first + offset, per_batch.min(total - offset)))
        .collect()
}

/// A `contact.created` webhook body shaped like the server's (about 500 bytes), which the bare
/// client posts so that both measurements move the same amount of data.
pub fn sample_webhook_body() -> Bytes {
    Bytes::from_static(
        br#"{"event":"contact.created","timestamp":"2026-04-17T12:34:56Z","data":{"id":"01JS3M7XK2Q8W5V9R4T6Y1Z0AB","first_name":"Ada","last_name":"Lovelace","prefix":null,"email":"ada-123456@example.com","phone":"+1 555 0100","mobile":null,"address":null,"city":"Austin","state":null,"zipcode":null,"country":null,"lifecycle_stage":"new_lead","lead_source":null,"lead_type":null,"status":"Active","assigned_agent_id":null,"tags":["buyer"],"notes":null,"preferences":null,"created_at":"2026-04-17T12:34:56Z","updated_at":"2026-04-17T12:34:56Z"},"site_url":"http://127.0.0.1:8080"}"#,
    )
}

/// The two signatures a delivery carries, computed per attempt as the server must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signatures {
    /// X-CRM-Signature: lowercase hex HMAC-SHA256 of the body.
    pub crm: String,
    /// webhook-signature: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    pub standard: String,
}

/// Signs `body` for delivery `id` at `timestamp` with the secret's bytes, as webhooks.md specifies.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> Signatures {
    let mut crm = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
    crm.update(body);
    let mut standard = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
    standard.update(format!("{id}.{timestamp}.").as_bytes());
    standard.update(body);
    Signatures {
        crm: hex::encode(crm.finalize().into_bytes()),
        standard: format!("v1,{}", BASE64.encode(standard.finalize().into_bytes())),
    }
}

/// Unix seconds now, for webhook-timestamp.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_bulk(first: u64, rows: u64) {
        let body: serde_json::Value = serde_json::from_slice(&bulk_body(first, rows)).unwrap();
        let created = body["create"].as_array().unwrap();
        assert_eq!(created.len() as u64, rows);
        if rows > 0 {
            assert_eq!(created[0]["email"], format!("ada-{first}@example.com"));
        }
    }

    #[test]
    fn bulk_bodies_are_json_with_every_row() {
        check_bulk(0, 0);
        check_bulk(7, 1);
        check_bulk(100, 10_000);
    }

    #[test]
    fn batches_cover_every_contact_once() {
        let batches = new_batches(25_001, 10_000);
        let rows: Vec<u64> = batches.iter().map(|batch| batch.rows).collect();
        assert_eq!(rows, [10_000, 10_000, 5_001]);
        let first_email = |batch: &Batch| {
            let body: serde_json::Value = serde_json::from_slice(&batch.body).unwrap();
            body["create"][0]["email"].as_str().unwrap().to_owned()
        };
        let number = |email: String| -> u64 { email["ada-".len()..email.find('@').unwrap()].parse().unwrap() };
        assert_eq!(number(first_email(&batches[1])), number(first_email(&batches[0])) + 10_000);
    }

    #[test]
    fn sample_body_is_about_500_bytes_of_json() {
        let body = sample_webhook_body();
        assert!((400..=600).contains(&body.len()), "{} bytes", body.len());
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["event"], "contact.created");
    }

    #[test]
    fn crm_signature_is_hex_hmac_of_the_body() {
        let signed = sign(b"key", "msg_1", 1, b"The quick brown fox jumps over the lazy dog");
        assert_eq!(signed.crm, "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    }

    #[test]
    fn standard_signature_matches_the_specs_example() {
        // The example from the Standard Webhooks specification, whose secret is
        // whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw.
        let key = BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signed = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(signed.standard, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
