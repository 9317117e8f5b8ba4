//! ecr-replication-auditor: tells whether every image pushed to Amazon ECR reached every Region
//! and account its replication rules name, how late, and whether the copy kept its tag.
//!
//! - [`domain`]: the rules, pure (no AWS type, no clock, no environment): configuration,
//!   event classification, correlation, verdicts, the report.
//! - [`store`]: where state is kept between events; [`store::memory`] is the embedded default.
//! - [`replay`]: the offline audit of archived events (`ecr-replication-auditor replay`).
//! - [`scenario`]: a seeded generator of realistic event streams with their known verdicts,
//!   shared by tests and benchmarks.

pub mod domain;
pub mod replay;
pub mod scenario;
pub mod store;
