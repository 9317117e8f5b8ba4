//! What the integration tests share.
//!
//! - [`alone`]: a test in a process of its own, for the one that must not share it.
//! - [`cli`]: the command-line binary, run on the sample events, and its report in short.
//! - [`events`]: the EventBridge events the Lambda receives, shaped as the samples in `events/`.
//! - [`ids`]: the domain's ids from strings, and what ECR answers about an image.
//! - [`logs`]: the JSON log lines a test's own thread writes.
//! - [`metrics`]: a metrics sink that records what the handler publishes.
//! - [`moto`]: a local moto server and SDK configurations pointed at it.
//! - [`proxy`]: a fault-injecting HTTP proxy in front of moto.
//! - [`stores`]: a state store that lets invocations interleave.
//! - [`world`]: the handler on its real adapters against moto, through the proxy.

pub mod alone;
pub mod cli;
pub mod events;
pub mod ids;
pub mod logs;
pub mod metrics;
pub mod moto;
pub mod proxy;
pub mod stores;
pub mod world;
