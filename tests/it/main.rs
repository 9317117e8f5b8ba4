//! The integration tests, one crate and one test binary (`cargo test --test it`), as
//! zero-to-production lays them out: each file of this directory is a module, and `support/`
//! holds what they share. One binary links the library and the AWS SDKs once instead of once
//! per file; `cargo test --test it handler::` runs one file's tests.

mod support;

mod architecture;
mod archives;
mod audit_moto;
mod aws_calls;
mod chart;
mod classify_text;
mod drift_fake;
mod drift_moto;
mod dynamodb_moto;
mod ecr_adapter_mocks;
mod ecr_adapter_moto;
mod ecr_inventory_mocks;
mod events_moto;
mod faults;
mod handler;
mod handler_properties;
mod hostile_input;
mod inventory;
mod inventory_moto;
mod lambda_local;
mod lambda_moto;
mod lambda_vs_replay;
mod log_group_moto;
mod memory_horizon;
mod metrics_adapters;
mod properties;
mod redelivery_moto;
mod replay_cli;
mod replication_events;
mod scale;
mod scenario_replay;
mod templates;
mod wait;
