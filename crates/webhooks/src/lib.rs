//! estate-crm's webhook engine: signing, safe destinations, one attempt over HTTP, the retry policy,
//! the dispatcher that turns pending deliveries into attempts, and the test button.
//!
//! The central types:
//! - [`Sender`]: one shared keep-alive HTTP client whose connector refuses forbidden addresses at
//!   connect time, against the address actually dialled, so a DNS answer that changes after an
//!   endpoint was saved cannot reach inside the network.
//! - [`Dispatcher`]: one lane per endpoint, so a slow receiver delays nobody else.
//! - [`retry::next_step`]: the retry policy as a pure function of an attempt's outcome.
#![deny(missing_docs)]

mod dispatcher;
pub mod endpoint_input;
mod metrics;
pub mod retry;
mod sender;
mod signing;
mod target;
mod test_button;

pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use metrics::DeliveryMetrics;
pub use sender::{AttemptOutcome, Message, Sender, SenderConfig};
pub use signing::{crm_signature, standard_signature, standard_webhooks_secret};
pub use target::{AddressPolicy, BlockedError, TargetUrl, UrlError, check_destination, forbidden_reason};
pub use test_button::{TestResult, TestTarget, send_test};
