//! estate-crm's domain: the CRM records, their validation, the webhook events each change fires, and
//! the bytes of each event's payload.
//!
//! This crate does no I/O. Everything here is a function from values to values, so that the rules users
//! rely on ("an update that changes nothing fires nothing", "`deal.stage_changed` comes before
//! `deal.won`", "the payload's keys are `event, timestamp, data, site_url` in that order") live in one
//! place and are tested without a database or a network.
//!
//! The central types:
//! - [`RecordKind`] and its [`schema`]: which fields a contact, lead, enquiry, deal or task has, and how
//!   each is checked. Records are schema-driven maps rather than one struct per kind: the same generic
//!   code validates, patches, stores and renders all five kinds, and a field's rules are written once.
//! - [`Record`]: a validated record. Its [`Record::to_api_json`] is the one representation that serves
//!   both the HTTP response and the webhook `data`.
//! - [`change`]: create, patch and delete as pure functions `old, input -> new, events`.
//! - [`EventName`] and [`payload::encode`]: the event catalogue and the envelope's exact bytes.
//! - [`webhook`]: what an endpoint subscribes to and how it retries.
//! - [`slack`]: the one line a person reads for each event (Slack endpoints, `estate-crm listen`).
#![deny(missing_docs)]

pub mod change;
mod error;
mod event;
mod kind;
pub mod payload;
mod record;
pub mod schema;
pub mod slack;
mod time;
pub mod webhook;

pub use error::FieldErrors;
pub use event::{EventName, EventTypeInfo, PendingEvent, event_catalogue, sample_contact, sample_data};
pub use kind::RecordKind;
pub use record::{Record, normalize_email};
pub use time::{Timestamp, format_timestamp};
