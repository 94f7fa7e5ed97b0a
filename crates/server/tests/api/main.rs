// Integration tests: the real `estate-crm` binary on a random port with a fresh data directory,
// and real HTTP receivers inside the tests. One binary, one module per area; built twice, as `api`
// (the embedded SQLite store) and `api_postgres` (each server on a fresh PostgreSQL database),
// whose main.rs includes this one: every path below is written to mean the same from both.

#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../../../store/tests/support/pg.rs"]
mod pg;

#[path = "../api/bulk.rs"]
mod bulk;
#[path = "../api/cli.rs"]
mod cli;
#[path = "../api/errors.rs"]
mod errors;
#[path = "../api/events.rs"]
mod events;
#[path = "../api/forms.rs"]
mod forms;
#[path = "../api/records.rs"]
mod records;

#[path = "../api/delivery.rs"]
mod delivery;
#[path = "../api/destinations.rs"]
mod destinations;
#[path = "../api/endpoints.rs"]
mod endpoints;
#[path = "../api/guarantees.rs"]
mod guarantees;
#[path = "../api/retries.rs"]
mod retries;
#[path = "../api/test_button.rs"]
mod test_button;

#[path = "../api/cluster.rs"]
mod cluster;
#[path = "../api/crash.rs"]
mod crash;
#[path = "../api/hostile.rs"]
mod hostile;
#[path = "../api/hubspot.rs"]
mod hubspot;
#[path = "../api/hubspot_standin.rs"]
mod hubspot_standin;
#[path = "../api/secrets.rs"]
mod secrets;
#[path = "../api/web.rs"]
mod web;
#[path = "../api/web_hubspot.rs"]
mod web_hubspot;

#[path = "../api/cli_tools.rs"]
mod cli_tools;
#[path = "../api/hooks.rs"]
mod hooks;
#[path = "../api/interop.rs"]
mod interop;
#[path = "../api/migrate.rs"]
mod migrate;
#[path = "../api/rotation.rs"]
mod rotation;
#[path = "../api/slack.rs"]
mod slack;
