//! The adapters: each implements a port of [`crate::ports`], and the SDK clients live here and
//! nowhere else. SDK types are converted inside an adapter and never leave it.
//!
//! | port | adapters |
//! |---|---|
//! | [`StateStore`](crate::ports::state::StateStore), [`HistoryReader`](crate::ports::history::HistoryReader) | [`dynamodb::DynamoStateStore`] (DynamoDB), [`memory::MemoryStateStore`] (in memory) |
//! | [`RegistryView`](crate::ports::registry::RegistryView) | [`ecr::EcrRegistry`] (aws-sdk-ecr, the audit role in other accounts); with the `testkit` feature, [`fake::FakeRegistry`] (scripted, for tests) and [`fake_inventory::FakeInventory`] (through the `FakeRegistry` it wraps) |
//! | [`EventsSink`](crate::ports::events::EventsSink) | [`eventbridge::EventBridgeSink`] (`PutEvents`), [`eventbridge::ConfiguredEvents`] (the bus, or none, as the settings chose); `ports::events::NoEvents` when no bus is set |
//! | [`RegistryInventory`](crate::ports::inventory::RegistryInventory) | [`ecr::EcrRegistry`] (in `ecr/inventory.rs`); with the `testkit` feature, [`fake_inventory::FakeInventory`] |
//! | [`InventoryPasses`](crate::ports::inventory::InventoryPasses) | [`dynamodb::DynamoStateStore`] (in `dynamodb/inventory.rs`), [`memory::MemoryStateStore`] (in `memory/inventory.rs`) |
//! | [`MetricsSink`](crate::ports::metrics::MetricsSink) | [`cloudwatch::CloudWatchSink`] (`PutMetricData`), [`cloudwatch::EmfSink`] (Embedded Metric Format lines), [`cloudwatch::ConfiguredSink`] (the one of the two `METRICS_SINK` chose) |
//! | [`EventLog`](crate::ports::event_log::EventLog) | [`cloudwatch_logs::LogGroupEventLog`] (`FilterLogEvents` on a log group) |
//!
//! [`stored`] is the stored form of a group both stores share: a bounded head and one record
//! per expectation, their keys, and what a save writes.
//!
//! [`sdk`] is the one classifier of SDK errors the AWS adapters share: can a retry help?

pub mod cloudwatch;
pub mod cloudwatch_logs;
pub mod dynamodb;
pub mod ecr;
pub mod eventbridge;
#[cfg(any(test, feature = "testkit"))]
pub mod fake;
#[cfg(any(test, feature = "testkit"))]
pub mod fake_inventory;
pub mod memory;
pub mod sdk;
pub mod stored;
