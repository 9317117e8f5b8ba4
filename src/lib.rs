//! ecr-replication-auditor: tells whether every image pushed to Amazon ECR reached every Region
//! and account its replication rules name, how late, and whether the copy kept its tag.
//!
//! - [`app`]: the Lambda's handler and the ports it uses (state, ECR, metrics).
//! - [`domain`]: the rules, pure (no AWS type, no clock, no environment): configuration,
//!   event classification, correlation, verdicts, the report.
//! - [`adapters`]: ports to the outside world and their adapters (metrics: CloudWatch, EMF).
//! - [`settings`]: the Lambda's configuration, read from the environment once and validated.
//! - [`store`]: where state is kept between events; [`store::memory`] is the embedded default.
//! - [`replay`]: the offline audit of archived events (`ecr-replication-auditor replay`).
//! - [`audit`]: the same report from the Lambda's history in DynamoDB, for a period of pushes
//!   (`ecr-replication-auditor audit`).
//! - [`chart`]: the lag per destination over the period as an SVG picture (`--chart`).
//! - [`scenario`]: a seeded generator of realistic event streams with their known verdicts,
//!   shared by tests and benchmarks.

pub mod adapters;
pub mod app;
pub mod audit;
pub mod chart;
pub mod domain;
pub mod replay;
pub mod scenario;
pub mod settings;
pub mod store;
