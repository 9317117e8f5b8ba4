//! The auditor's rules, as plain functions over plain types: no AWS type, no clock, no
//! environment. The Lambda, `replay` and the tests all run this same code.
//!
//! - [`ids`]: identifiers parsed once at the edge (account, Region, repository, digest, tag).
//! - [`time`]: instants and the replication window.
//! - [`config`]: a Region's replication rules and the destinations a push must reach.
//! - [`event`]: one EventBridge record classified as push, copy, ignored or rejected.
//! - [`correlate`]: matching copies to pushes, and the verdict per (push, destination).
//! - [`confirm`]: what ECR's APIs said about an expected copy, and what that confirms.
//! - [`deletion`]: replicated deletes: what a delete owes each destination, what shows it was
//!   applied, the verdict, and the Lambda's watch over it.
//! - [`ledger`]: the Lambda's watch per expectation: confirmations, what was counted, next check.
//! - [`report`]: the audit report built from verdicts.
//! - [`signals`]: the replication events handed out to other teams, from findings.
//! - [`metrics`]: the published metrics, and samples folded into CloudWatch data points.
//! - [`drift`]: inventory reconciliation: what ECR lists in a source and its destinations,
//!   held against the rules (missing, stale, archived, not deleted, settings).

pub mod config;
pub mod confirm;
pub mod correlate;
pub mod deletion;
pub mod drift;
pub mod event;
pub mod ids;
pub mod ledger;
pub mod metrics;
pub mod report;
pub mod signals;
pub mod time;
