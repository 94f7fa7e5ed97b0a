//! The API tests again, each server keeping its data in a fresh PostgreSQL database: the same
//! modules as `api` (see `tests/api/main.rs`); the harness tells the runs apart by the crate's name.

include!("../api/main.rs");
