//! ecr-replication-auditor: tells whether every image pushed to Amazon ECR reached every Region
//! and account its replication rules name, how late, and whether the copy kept its tag.
//!
//! The rooms, from the inside out (ARCHITECTURE.md draws the same map):
//! - [`domain`]: the rules, pure (no AWS type, no clock, no environment): configuration, event
//!   classification, correlation, verdicts, the Lambda's ledger and confirmations, the report.
//! - [`ports`]: every trait the auditor talks to the outside world through, side by side
//!   (state, history, registry, metrics, events, event_log, inventory).
//! - [`adapters`]: the ports' implementations: DynamoDB, ECR, CloudWatch/EMF, EventBridge,
//!   CloudWatch Logs, and in memory; with the `testkit` feature, the scripted registries (fake,
//!   fake_inventory). The SDK clients live there and nowhere else.
//! - [`app`]: the Lambda's handler (push, copy, sweep), generic over the ports.
//! - [`replay`]: the offline audit of archived events, with its working set in memory.
//! - [`audit`]: the same report from the Lambda's history, read through
//!   [`ports::history::HistoryReader`].
//! - [`wait`]: the `wait` gate for pipelines: polls ECR until an image is in every destination.
//! - [`reconcile`]: inventory reconciliation runs (what ECR lists, held against the rules),
//!   shared by [`drift`] and the Lambda's scheduled check ([`app::inventory`]).
//! - [`drift`]: the `drift` command: is every image where the rules say, right now?
//! - [`output`]: what `replay`, `audit` and `drift` print: tables, JSON documents, the lag chart.
//! - [`clock`]: the one place the wall clock is read (by the binaries only).
//! - [`settings`]: the Lambda's configuration, read from the environment once and validated.
//! - [`scenario`] (feature `testkit`, for tests, benchmarks and fuzz targets only): a seeded
//!   generator of realistic event streams with their known verdicts.

pub mod adapters;
pub mod app;
pub mod audit;
pub mod clock;
pub mod domain;
pub mod drift;
pub mod output;
pub mod ports;
pub mod reconcile;
pub mod replay;
#[cfg(any(test, feature = "testkit"))]
pub mod scenario;
pub mod settings;
pub mod wait;
