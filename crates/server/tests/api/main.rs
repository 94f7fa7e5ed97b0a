//! Integration tests: the real `estate-crm` binary on a random port with a fresh data directory,
//! and real HTTP receivers inside the tests. One binary, one module per area; built twice, as `api`
//! (the embedded SQLite store) and `api_postgres` (each server on a fresh PostgreSQL database).

mod helpers;
#[path = "../../../store/tests/support/pg.rs"]
mod pg;

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
mod migrate;
mod rotation;
mod slack;
