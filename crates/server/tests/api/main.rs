//! Integration tests: the real `estate-crm` binary on a random port with a fresh data directory,
//! and real HTTP receivers inside the tests. One binary, one module per area.

mod helpers;

mod bulk;
mod cli;
mod errors;
mod events;
mod forms;
mod records;

mod delivery;
mod destinations;
mod endpoints;
mod guarantees;
mod retries;
mod test_button;

mod crash;
mod hostile;
mod secrets;
mod web;
