//! `estate-crm verify`: checks one webhook's signatures and timestamp, given as header flags with
//! the body on stdin, or as a raw HTTP request in a file. Exit status 0 when it verifies, 1 when not.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use estate_crm_webhooks::{Signed, secret_keys};

use super::{VerifyArgs, verdict_lines};

/// The largest body or request file read.
const MAX_INPUT: u64 = 16 * 1024 * 1024;

/// Runs `estate-crm verify`.
pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let request = match &args.request {
        Some(path) => {
            let raw = read_bounded(std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?)?;
            Some(RawRequest::parse(&raw).with_context(|| format!("{} is not an HTTP request", path.display()))?)
        }
        None => None,
    };
    let stdin_body;
    let signed = match &request {
        Some(request) => Signed {
            webhook_id: request.header("webhook-id"),
            timestamp: request.header("webhook-timestamp"),
            signature: request.header("webhook-signature"),
            crm_signature: request.header("x-crm-signature"),
            crm_signature_previous: request.header("x-crm-signature-previous"),
            body: &request.body,
        },
        None => {
            stdin_body = read_bounded(std::io::stdin().lock()).context("reading the body from stdin")?;
            Signed {
                webhook_id: args.id.as_deref(),
                timestamp: args.timestamp.as_deref(),
                signature: args.signature.as_deref(),
                crm_signature: args.crm_signature.as_deref(),
                crm_signature_previous: args.crm_signature_previous.as_deref(),
                body: &stdin_body,
            }
        }
    };
    if signed.signature.is_none() && signed.crm_signature.is_none() && signed.crm_signature_previous.is_none() {
        bail!("no signature to check: give --signature and/or --crm-signature, or --request with a webhook in it");
    }
    let verdict = estate_crm_webhooks::verify(&secret_keys(&args.secret), &signed, chrono::Utc::now().timestamp());
    for line in verdict_lines(&verdict, &signed) {
        println!("{line}");
    }
    if verdict.is_valid() {
        println!("verified: the body is the one the secret's holder signed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("NOT verified");
        Ok(ExitCode::FAILURE)
    }
}

fn read_bounded(input: impl std::io::Read) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(MAX_INPUT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT {
        bail!("the input is larger than {} MiB", MAX_INPUT / 1024 / 1024);
    }
    Ok(bytes)
}

/// A raw HTTP/1.1 request as a file holds it: a request line, headers, a blank line, the body.
struct RawRequest {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawRequest {
    fn parse(raw: &[u8]) -> anyhow::Result<RawRequest> {
        let (head_end, separator) = find(raw, b"\r\n\r\n")
            .map(|at| (at, 4))
            .or_else(|| find(raw, b"\n\n").map(|at| (at, 2)))
            .context("no blank line ends its head")?;
        let head = std::str::from_utf8(&raw[..head_end]).context("its head is not text")?;
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default();
        if request_line.split_whitespace().count() != 3 {
            bail!("its first line {request_line:?} is not like POST /path HTTP/1.1");
        }
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':').with_context(|| format!("{line:?} is not a header"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut body = raw[head_end + separator..].to_vec();
        // An editor may add a newline after the body; Content-Length says where it ends.
        let length = headers.iter().find(|(name, _)| name == "content-length").and_then(|(_, v)| v.parse().ok());
        if let Some(length) = length
            && length <= body.len()
        {
            body.truncate(length);
        }
        Ok(RawRequest { headers, body })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_requests() {
        let request =
            RawRequest::parse(b"POST /hook HTTP/1.1\r\nWebhook-Id: msg_1\r\nContent-Length: 2\r\n\r\n{}\n").unwrap();
        assert_eq!(request.header("webhook-id"), Some("msg_1"));
        assert_eq!(request.body, b"{}");
        let request = RawRequest::parse(b"POST / HTTP/1.1\nx-crm-signature: ab\n\n{\"a\":1}").unwrap();
        assert_eq!(request.header("x-crm-signature"), Some("ab"));
        assert_eq!(request.body, b"{\"a\":1}");
        assert!(RawRequest::parse(b"hello").is_err());
        assert!(RawRequest::parse(b"POST /\r\n\r\n").is_err());
    }
}
