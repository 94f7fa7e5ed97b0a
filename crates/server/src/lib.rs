//! estate-crm's server: the HTTP API (axum), authentication, the public enquiry form, configuration,
//! and the wiring that runs the API and the webhook dispatcher side by side.
//!
//! Handlers are thin: an extractor authenticates, another parses the body into the API's error shape,
//! one store call does the work, and the answer is a typed response. Business rules live in
//! `estate-crm-domain`; transactions in `estate-crm-store`; delivery in `estate-crm-webhooks`.
#![deny(missing_docs)]

mod app;
mod auth;
pub mod cli;
pub mod config;
mod drain;
mod error;
mod extract;
mod openapi;
mod rate_limit;
mod routes;
mod state;
pub mod telemetry;

pub use app::{Application, migrate};
