//! The ports: every trait through which the auditor talks to the outside world, side by side.
//! Each names what it needs in domain terms; the adapters ([`crate::adapters`]) implement them
//! and keep every AWS type to themselves. Nothing here imports an adapter.
//!
//! - [`state`]: [`state::StateStore`], where the Lambda keeps its groups between events
//!   (versioned, conditional saves; the index of groups the sweep must visit).
//! - [`history`]: [`history::HistoryReader`], the groups by first push, for `audit`.
//! - [`registry`]: [`registry::RegistryView`], what the auditor asks ECR (configuration,
//!   replication status, images in a destination).
//! - [`metrics`]: [`metrics::MetricsSink`], where metric data goes.
//! - [`events`]: [`events::EventsSink`], where replication events for other teams go.
//! - [`event_log`]: [`event_log::EventLog`], where archived events are read back from
//!   (`replay --log-group`).
//! - [`inventory`]: [`inventory::RegistryInventory`], what the inventory reconciliation lists
//!   in a registry, and [`inventory::InventoryPasses`], where the Lambda keeps its pass.

pub mod event_log;
pub mod events;
pub mod history;
pub mod inventory;
pub mod metrics;
pub mod registry;
pub mod state;
