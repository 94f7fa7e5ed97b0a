//! The command line: the start line, the admin token file, and the ways a start fails, each with a
//! one-line message and a non-zero exit; a signal stops the server with status 0.
//!
//! These tests run the binary themselves, with an empty environment so that no `ESTATE_CRM_*`
//! variable of the machine leaks in. Every wait is bounded by [`PATIENCE`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::helpers::{ADMIN_TOKEN, PATIENCE};

fn estate_crm(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_estate-crm"));
    command
        .arg("serve")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Runs the binary to its end, which must come within [`PATIENCE`].
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = estate_crm(args, env).spawn().expect("the binary starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(output) => output.expect("the output"),
        Err(_) => {
            send_signal(pid, "KILL");
            panic!("estate-crm serve {args:?} was expected to exit at once, but it kept running");
        }
    }
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes).lines().map(str::to_owned).collect()
}

/// Runs a start that must fail: a non-zero exit, nothing on stdout, and exactly one line on stderr
/// that contains each of `mentions`.
fn check_refused_start(args: &[&str], env: &[(&str, &str)], mentions: &[&str]) {
    let output = run_to_exit(args, env);
    let stderr = lines(&output.stderr);
    assert!(!output.status.success(), "{args:?} exits non-zero");
    assert_eq!(stderr.len(), 1, "{args:?}: one line on stderr, got {stderr:#?}");
    for mention in mentions {
        assert!(stderr[0].contains(mention), "{args:?}: {:?} should mention {mention:?}", stderr[0]);
    }
    assert!(output.stdout.is_empty(), "{args:?}: {:?}", String::from_utf8_lossy(&output.stdout));
}

/// A running binary: its stdout line by line, its stderr at the end, its exit when it comes.
struct Running {
    pid: u32,
    stdout: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    exit: mpsc::Receiver<ExitStatus>,
    exited: bool,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = estate_crm(args, env).spawn().expect("the binary starts");
        let pid = child.id();
        let (line_tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        let (exit_tx, exit) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        Running { pid, stdout, stderr: Some(stderr), exit, exited: false }
    }

    fn next_line(&self) -> String {
        self.stdout.recv_timeout(PATIENCE).expect("a line on stdout in time")
    }

    /// The lines up to the start line, and the address that line names.
    fn until_listening(&self) -> (Vec<String>, String, SocketAddr) {
        let mut before = Vec::new();
        loop {
            let line = self.next_line();
            if let Some(rest) = line.strip_prefix("estate-crm listening on http://") {
                let address = rest.split([',', ' ']).next().unwrap_or("");
                let address = address.parse().unwrap_or_else(|_| panic!("an address in {line:?}"));
                return (before, line, address);
            }
            before.push(line);
            assert!(before.len() < 10, "no start line: {before:?}");
        }
    }

    /// Sends `signal` and waits for the exit; answers the status, the rest of stdout and all of stderr.
    fn stop(mut self, signal: &str) -> (ExitStatus, Vec<String>, String) {
        send_signal(self.pid, signal);
        let status = self.exit.recv_timeout(PATIENCE).expect("the server exits in time");
        self.exited = true;
        let mut rest = Vec::new();
        loop {
            match self.stdout.recv_timeout(PATIENCE) {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stdout stays open after the exit"),
            }
        }
        let stderr = self.stderr.take().unwrap().join().expect("the stderr reader");
        (status, rest, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.exited && self.exit.try_recv().is_err() {
            send_signal(self.pid, "KILL");
        }
    }
}

/// A GET over a plain socket; answers the whole response.
fn http_get(address: SocketAddr, path: &str, token: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&address, PATIENCE).expect("the server accepts connections");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    response
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[test]
fn the_start_line_names_the_real_port_and_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let server = Running::start(&["--listen", "127.0.0.1:0", "--data-dir", data, "--admin-token", ADMIN_TOKEN], &[]);
    let (before, line, address) = server.until_listening();
    assert!(before.is_empty(), "the start line comes first: {before:?}");
    assert_ne!(address.port(), 0, "{line}");
    assert!(line.contains(data), "the start line says where the data is: {line}");
    assert_eq!(status_line(&http_get(address, "/healthz", "")), "HTTP/1.1 200 OK");
    assert_eq!(status_line(&http_get(address, "/api/v1/contacts", ADMIN_TOKEN)), "HTTP/1.1 200 OK");
    let (status, rest, _) = server.stop("TERM");
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    // The start line, then only the one-time setup link while no user has a password.
    assert!(
        rest.len() == 1 && rest[0].contains(&format!("http://{address}/setup?code=")),
        "the start line, the setup link, nothing more: {rest:?}"
    );
}

#[test]
fn sigterm_and_sigint_stop_it_with_status_0() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let server =
            Running::start(&["--listen", "127.0.0.1:0", "--data-dir", data, "--admin-token", ADMIN_TOKEN], &[]);
        let (_, _, address) = server.until_listening();
        assert_eq!(status_line(&http_get(address, "/readyz", "")), "HTTP/1.1 200 OK");
        let (status, _, _) = server.stop(signal);
        assert_eq!(status.code(), Some(0), "SIG{signal}");
        assert!(TcpStream::connect_timeout(&address, PATIENCE).is_err(), "SIG{signal}: nothing listens any more");
    }
}

#[test]
fn a_taken_port_ends_it_with_a_message_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    check_refused_start(
        &["--listen", &address, "--data-dir", data, "--admin-token", ADMIN_TOKEN],
        &[],
        &[&address, "--listen"],
    );
    drop(taken);
}

#[test]
fn bad_values_end_it_with_one_line_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never-made");
    let data = data.to_str().unwrap();
    let base = ["--data-dir", data];
    for (flag, value) in [
        ("--retry-schedule", "5x"),
        ("--retry-schedule", "5m,200h"),
        ("--retry-schedule", "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s"),
        ("--listen", "nonsense"),
        ("--listen", "127.0.0.1:99999"),
        ("--delivery-timeout", "forever"),
        ("--delivery-timeout", "0s"),
        ("--site-url", "not a url"),
        ("--site-url", "ftp://crm.example.com"),
        ("--admin-token", "short"),
        ("--database-url", "mysql://db.example.com/crm"),
        ("--database-url", "postgres://127.0.0.1:1/crm"),
        ("--retention-days", "0"),
    ] {
        let mut args = base.to_vec();
        if flag != "--listen" {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend([flag, value]);
        check_refused_start(&args, &[], &[flag]);
    }
    // The environment is checked the same way.
    let args = ["--data-dir", data, "--listen", "127.0.0.1:0"];
    check_refused_start(&args, &[("ESTATE_CRM_RETRY_SCHEDULE", "5x")], &["--retry-schedule"]);
    assert!(!Path::new(data).exists(), "a refused start creates no data directory");
}

#[test]
fn unknown_flags_and_unparsable_numbers_end_it_naming_the_flag() {
    // These are refused by the argument parser itself, which adds a usage hint after its one-line error.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (args, mention) in [
        (&["--bogus"][..], "--bogus"),
        (&["--retention-days=-1"], "--retention-days"),
        (&["--form-rate-per-minute", "many"], "--form-rate-per-minute"),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0", "--data-dir", data];
        all.extend(args);
        let output = run_to_exit(&all, &[]);
        assert!(!output.status.success(), "{args:?}");
        let stderr = lines(&output.stderr);
        assert!(
            stderr.first().is_some_and(|l| l.starts_with("error:") && l.contains(mention)),
            "{args:?}: {stderr:#?}"
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn an_unusable_data_directory_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let under_file = file.join("data");
    for data in [file.to_str().unwrap(), under_file.to_str().unwrap()] {
        check_refused_start(
            &["--listen", "127.0.0.1:0", "--data-dir", data, "--admin-token", ADMIN_TOKEN],
            &[],
            &[data],
        );
    }
    // One server per data directory: a second one is refused while the first runs.
    let shared = dir.path().join("shared");
    let shared = shared.to_str().unwrap();
    let args = ["--listen", "127.0.0.1:0", "--data-dir", shared, "--admin-token", ADMIN_TOKEN];
    let first = Running::start(&args, &[]);
    first.until_listening();
    check_refused_start(&args, &[], &[shared]);
    assert!(first.stop("TERM").0.success());
}

#[test]
fn the_first_start_makes_an_owner_only_admin_token_and_prints_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = ["--listen", "127.0.0.1:0", "--data-dir", data];
    let first = Running::start(&args, &[]);
    let (before, _, address) = first.until_listening();
    let path = dir.path().join("admin-token");
    let token = std::fs::read_to_string(&path).expect("<data-dir>/admin-token").trim().to_owned();
    assert!(token.len() >= 32, "a long random token: {token:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "readable by the owner alone");
    assert_eq!(status_line(&http_get(address, "/api/v1/contacts", &token)), "HTTP/1.1 200 OK");
    assert_eq!(status_line(&http_get(address, "/api/v1/contacts", "not-the-token")), "HTTP/1.1 401 Unauthorized");
    let (status, rest, stderr) = first.stop("TERM");
    assert!(status.success());
    let printed = before.iter().chain(&rest).filter(|line| line.contains(&token)).count();
    assert_eq!(printed, 1, "printed once: {before:?} {rest:?}");
    assert!(!stderr.contains(&token), "the token is not logged");

    let second = Running::start(&args, &[]);
    let (before, _, address) = second.until_listening();
    assert_eq!(status_line(&http_get(address, "/api/v1/contacts", &token)), "HTTP/1.1 200 OK", "the same token works");
    let (status, rest, stderr) = second.stop("TERM");
    assert!(status.success());
    assert!(
        !before.iter().chain(&rest).any(|line| line.contains(&token)) && !stderr.contains(&token),
        "not printed again"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token, "the file is kept");
}

#[test]
fn flags_come_from_the_environment_and_a_flag_beats_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let env = [
        ("ESTATE_CRM_LISTEN", "nonsense"),
        ("ESTATE_CRM_DATA_DIR", data),
        ("ESTATE_CRM_ADMIN_TOKEN", ADMIN_TOKEN),
        ("ESTATE_CRM_RETRY_SCHEDULE", "1s"),
    ];
    let server = Running::start(&["--listen", "127.0.0.1:0"], &env);
    let (_, line, address) = server.until_listening();
    assert!(line.contains(data), "{line}");
    assert_eq!(status_line(&http_get(address, "/api/v1/contacts", ADMIN_TOKEN)), "HTTP/1.1 200 OK");
    assert!(!dir.path().join("admin-token").exists(), "a given token is not written down");
    assert!(server.stop("TERM").0.success());
}
