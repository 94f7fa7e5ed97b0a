pub mod pg;
pub mod stores;
