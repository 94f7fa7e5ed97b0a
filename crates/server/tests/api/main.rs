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
mod hubspot;
mod hubspot_standin;
mod secrets;
mod web;
mod web_hubspot;

mod cli_tools;
mod hooks;
mod interop;
mod rotation;
mod slack;
