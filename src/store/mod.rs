//! Where the auditor keeps what it has seen between events.
//!
//! - [`memory`]: the embedded store `replay` runs on; state lives for one process.
pub mod memory;
