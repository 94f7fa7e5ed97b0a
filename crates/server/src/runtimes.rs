//! The server's two tokio runtimes: one serves the API, the other delivers webhooks.
//!
//! They are apart so that the operating system can favour the API when both want the CPU: the
//! delivery runtime's threads run at a lower priority (a higher nice value). A bulk import then
//! keeps its pace while the webhooks it fans out are sent in the CPU time the API leaves, and when
//! the API is idle the deliveries have the whole machine. The deliveries are durable whatever the
//! pace: a delay costs latency, never a webhook.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// How much lower the delivery threads' priority is than the API's: nice +5 gives them about a
/// third of the API's share of a busy CPU (Linux weights 335 against 1024).
const DELIVERY_NICENESS: i32 = 5;

/// The runtime of the HTTP API.
pub fn api() -> io::Result<Runtime> {
    Builder::new_multi_thread().thread_name("estate-crm-api").enable_all().build()
}

/// The runtime of the dispatcher and the purge loop, on lower-priority threads.
pub fn delivery() -> io::Result<Runtime> {
    Builder::new_multi_thread()
        .thread_name("estate-crm-delivery")
        .on_thread_start(lower_this_threads_priority)
        .enable_all()
        .build()
}

#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    // On Linux a nice value belongs to a thread: given this thread's id, setpriority leaves the
    // API's threads alone.
    let this_thread = rustix::thread::gettid();
    if let Err(err) = rustix::process::setpriority_process(Some(this_thread), DELIVERY_NICENESS) {
        // Lowering a priority needs no privilege; if it fails anyway the deliveries run at the
        // API's priority, which is correct, only less fair to the API.
        tracing::debug!(error = %err, "could not lower the delivery threads' priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}
