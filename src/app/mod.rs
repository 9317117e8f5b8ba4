//! The Lambda's application layer: the handler that routes each invocation, and the ports it
//! talks through (state, ECR, metrics). It is generic over the ports, so tests drive it with the
//! in-memory store and fakes, and the binary with DynamoDB, ECR and CloudWatch.

pub mod handler;
pub mod registry;
pub mod state;
