//! Interoperability: real deliveries (rotated ones too, with two `v1,` entries) verified by the
//! official Standard Webhooks libraries from PyPI and npm, at pinned versions, and by a PHP
//! receiver written with `hash_hmac` as users of the original product write theirs; and
//! `estate-crm verify` agreeing with all of them on good, tampered, stale and wrongly keyed
//! deliveries.
//!
//! The tools are prepared once per machine under the target directory (a Python venv, an npm
//! folder), idempotently: each is built in a scratch folder and renamed into place, so two runs at
//! once cannot leave half of one. A missing `python3`, `node`/`npm` or `php` fails the test with
//! the command that installs it: these tests never skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use base64::Engine as _;
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Received, Receiver, TestApp};

const PYTHON_PACKAGE: &str = "standardwebhooks==1.1.0";
const NPM_PACKAGE: &str = "standardwebhooks@1.1.1";

const VERIFY_PY: &str = r#"
import json, sys
from standardwebhooks import Webhook
out = []
for case in json.load(open(sys.argv[1])):
    headers = {"webhook-id": case["id"], "webhook-timestamp": case["timestamp"], "webhook-signature": case["signature"]}
    try:
        Webhook(case["whsec"]).verify(case["body"].encode("utf-8"), headers)
        out.append(True)
    except Exception:
        out.append(False)
print(json.dumps(out))
"#;

const VERIFY_JS: &str = r#"
const { Webhook } = require("standardwebhooks");
const cases = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
const out = cases.map((c) => {
  const headers = { "webhook-id": c.id, "webhook-timestamp": c.timestamp, "webhook-signature": c.signature };
  try { new Webhook(c.whsec).verify(c.body, headers); return true; } catch (e) { return false; }
});
console.log(JSON.stringify(out));
"#;

/// A receiver as PHP users write one: `X-CRM-Signature` (or, during a rotation, the previous
/// one) with `hash_hmac`, and the Standard Webhooks signature by hand, with its 5-minute window.
const VERIFY_PHP: &str = r#"<?php
$cases = json_decode(file_get_contents($argv[1]), true);
$out = [];
foreach ($cases as $c) {
    $expected = hash_hmac('sha256', $c['body'], $c['secret']);
    $crm = hash_equals($expected, $c['crm_signature'])
        || ($c['crm_signature_previous'] !== '' && hash_equals($expected, $c['crm_signature_previous']));
    $signed = base64_encode(hash_hmac('sha256', $c['id'] . '.' . $c['timestamp'] . '.' . $c['body'], $c['secret'], true));
    $standard = false;
    foreach (explode(' ', $c['signature']) as $entry) {
        $parts = explode(',', $entry, 2);
        if (count($parts) === 2 && $parts[0] === 'v1' && hash_equals($signed, $parts[1])) {
            $standard = true;
        }
    }
    $fresh = abs(time() - intval($c['timestamp'])) <= 300;
    $out[] = ['crm' => $crm, 'standard' => $standard && $fresh];
}
echo json_encode($out), "\n";
"#;

/// Where the tools live, once prepared.
struct Tools {
    python: PathBuf,
    node_dir: PathBuf,
    dir: PathBuf,
}

static TOOLS: OnceLock<Tools> = OnceLock::new();

/// The tools, prepared on first use; blocking, so called off the test's runtime.
fn tools() -> &'static Tools {
    TOOLS.get_or_init(|| {
        require("python3", &["--version"], "apt-get install -y python3 python3-venv");
        require("node", &["--version"], "apt-get install -y nodejs npm");
        require("npm", &["--version"], "apt-get install -y nodejs npm");
        require("php", &["--version"], "apt-get install -y php-cli");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-tools");
        std::fs::create_dir_all(&dir).expect("the tools folder");
        let venv = dir.join("venv-standardwebhooks-1.1.0");
        prepare(&venv, |scratch| {
            run(
                Command::new("python3").args(["-m", "venv"]).arg(scratch),
                "python3 -m venv (on Debian: apt-get install -y python3-venv)",
            );
            run(
                Command::new(scratch.join("bin/pip")).args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    PYTHON_PACKAGE,
                ]),
                "pip install standardwebhooks",
            );
        });
        let node_dir = dir.join("npm-standardwebhooks-1.1.1");
        prepare(&node_dir, |scratch| {
            run(
                Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                    .arg(scratch)
                    .arg(NPM_PACKAGE),
                "npm install standardwebhooks",
            );
        });
        for (name, script) in [("verify.py", VERIFY_PY), ("verify.js", VERIFY_JS), ("verify.php", VERIFY_PHP)] {
            std::fs::write(node_dir.join(name), script).expect("writing a verifier script");
        }
        // A venv made elsewhere and renamed keeps working: its scripts are called through python.
        Tools { python: venv.join("bin/python"), node_dir: node_dir.clone(), dir }
    })
}

fn require(program: &str, args: &[&str], install: &str) {
    let found = Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "{program} is needed by the interop tests and is missing; install it with: {install}"
    );
}

/// Builds `target` with `build` in a scratch folder renamed into place, unless it is there.
fn prepare(target: &Path, build: impl FnOnce(&Path)) {
    if target.exists() {
        return;
    }
    let scratch = target.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    build(&scratch);
    if std::fs::rename(&scratch, target).is_err() {
        // Another run got there first; its copy is as good.
        let _ = std::fs::remove_dir_all(&scratch);
    }
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(output.status.success(), "{what} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// One delivery to check against one secret, and what every verifier should say.
#[derive(Debug, Clone)]
struct Case {
    what: String,
    secret: String,
    id: String,
    timestamp: String,
    signature: String,
    crm_signature: String,
    crm_signature_previous: String,
    body: String,
    /// Standard Webhooks verifies (signature and a fresh timestamp).
    standard: bool,
    /// `X-CRM-Signature` or `X-CRM-Signature-Previous` holds (no time in it).
    crm: bool,
}

impl Case {
    fn from_delivery(what: &str, received: &Received, secret: &str, valid: bool) -> Case {
        Case {
            what: what.to_owned(),
            secret: secret.to_owned(),
            id: received.header("webhook-id").to_owned(),
            timestamp: received.header("webhook-timestamp").to_owned(),
            signature: received.header("webhook-signature").to_owned(),
            crm_signature: received.header("x-crm-signature").to_owned(),
            crm_signature_previous: received.header("x-crm-signature-previous").to_owned(),
            body: String::from_utf8(received.body.to_vec()).expect("UTF-8 JSON"),
            standard: valid,
            crm: valid,
        }
    }

    fn tampered(&self) -> Case {
        Case {
            what: format!("{} (tampered)", self.what),
            body: self.body.replacen("\"data\":{", "\"data\":{\"injected\":1,", 1),
            standard: false,
            crm: false,
            ..self.clone()
        }
    }

    fn json(&self) -> Value {
        json!({
            "whsec": format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&self.secret)),
            "secret": self.secret, "id": self.id, "timestamp": self.timestamp, "signature": self.signature,
            "crm_signature": self.crm_signature, "crm_signature_previous": self.crm_signature_previous, "body": self.body,
        })
    }
}

/// Runs each verifier over every case, and `estate-crm verify` on each; all must agree with the
/// expectations.
fn check_everyone_agrees(cases: &[Case]) {
    let tools = tools();
    let file = tempfile::NamedTempFile::new_in(&tools.dir).expect("a cases file");
    std::fs::write(file.path(), serde_json::to_vec(&cases.iter().map(Case::json).collect::<Vec<_>>()).unwrap())
        .unwrap();
    let verdicts = |output: Output| -> Value { serde_json::from_slice(&output.stdout).expect("a JSON verdict") };

    let python =
        verdicts(run(Command::new(&tools.python).arg(tools.node_dir.join("verify.py")).arg(file.path()), "python"));
    let node =
        verdicts(run(Command::new("node").arg("verify.js").arg(file.path()).current_dir(&tools.node_dir), "node"));
    let php = verdicts(run(Command::new("php").arg(tools.node_dir.join("verify.php")).arg(file.path()), "php"));
    for (index, case) in cases.iter().enumerate() {
        assert_eq!(python[index], case.standard, "Python standardwebhooks on {}", case.what);
        assert_eq!(node[index], case.standard, "npm standardwebhooks on {}", case.what);
        assert_eq!(php[index]["standard"], case.standard, "PHP (webhook-signature) on {}", case.what);
        assert_eq!(php[index]["crm"], case.crm, "PHP hash_hmac (X-CRM-Signature) on {}", case.what);
        let ours = estate_crm_verify(case);
        assert_eq!(ours, case.standard && case.crm, "estate-crm verify on {}", case.what);
    }
}

/// `estate-crm verify` with the headers as flags and the body on stdin: whether it exits 0.
fn estate_crm_verify(case: &Case) -> bool {
    use std::io::Write as _;
    let mut command = Command::new(env!("CARGO_BIN_EXE_estate-crm"));
    command.args(["verify", "--secret", &case.secret, "--id", &case.id, "--timestamp", &case.timestamp]);
    command.args(["--signature", &case.signature, "--crm-signature", &case.crm_signature]);
    if !case.crm_signature_previous.is_empty() {
        command.args(["--crm-signature-previous", &case.crm_signature_previous]);
    }
    let mut child = command
        .env_remove("ESTATE_CRM_WEBHOOK_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("estate-crm verify starts");
    child.stdin.take().unwrap().write_all(case.body.as_bytes()).unwrap();
    let output = child.wait_with_output().expect("estate-crm verify ends");
    assert!(output.status.code().is_some_and(|c| c == 0 || c == 1), "{output:?}");
    output.status.success()
}

#[tokio::test]
async fn every_delivery_verifies_with_the_official_libraries_and_php_rotated_ones_with_both_secrets() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let first = "interop-first-secret";
    let id = app.add_endpoint(json!({"url": receiver.url("/"), "events": "*", "secret": first})).await;
    app.create("contacts", json!({"first_name": "Zoë", "last_name": "Ünal", "notes": "quotes \" and \\ and ✓"})).await;
    app.create("deals", json!({"title": "12 Elm St", "stage": "closed_won", "amount": 450000})).await;
    let before = receiver.take(3).await;

    let rotated = app.post(&format!("/api/v1/webhooks/{id}/rotate-secret"), json!({"grace": "1h"})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let second = rotated.body["secret"].as_str().unwrap().to_owned();
    app.create("contacts", json!({"first_name": "After rotation"})).await;
    let during = receiver.next().await;
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);

    let mut cases = Vec::new();
    for (n, received) in before.iter().enumerate() {
        let case =
            Case::from_delivery(&format!("delivery {n} ({})", received.header("x-crm-event")), received, first, true);
        cases.push(case.tampered());
        cases.push(case);
        cases.push(Case::from_delivery(
            &format!("delivery {n} with a wrong secret"),
            received,
            "not-the-secret",
            false,
        ));
    }
    let with_new = Case::from_delivery("rotated delivery, new secret", &during, &second, true);
    let with_old = Case::from_delivery("rotated delivery, old secret", &during, first, true);
    cases.extend([with_new.tampered(), with_old.tampered(), with_new, with_old]);
    tokio::task::spawn_blocking(move || check_everyone_agrees(&cases)).await.expect("the verifiers ran");
}

#[tokio::test]
async fn a_stale_delivery_is_refused_by_everyone_that_reads_the_time() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let secret = "interop-stale-secret";
    app.add_endpoint(json!({"url": receiver.url("/"), "events": "*", "secret": secret})).await;
    app.create("contacts", json!({"first_name": "Old"})).await;
    let received = receiver.next().await;

    // The same delivery replayed ten minutes late: signed properly for that older time.
    let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret));
    let then = chrono::Utc::now().timestamp() - 600;
    let signer = standardwebhooks::Webhook::new(&whsec).unwrap();
    let signature = signer.sign(received.header("webhook-id"), then, &received.body).unwrap();
    let fresh = Case::from_delivery("fresh delivery", &received, secret, true);
    let stale = Case {
        what: "replayed ten minutes late".into(),
        timestamp: then.to_string(),
        signature,
        standard: false,
        // X-CRM-Signature carries no time: it still holds, which is why webhook-signature exists.
        crm: true,
        ..fresh.clone()
    };
    tokio::task::spawn_blocking(move || check_everyone_agrees(&[fresh, stale])).await.expect("the verifiers ran");
}
