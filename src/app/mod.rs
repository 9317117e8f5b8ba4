//! The Lambda's application layer: the handler that routes each invocation (push, copy, delete,
//! restore, sweep)
//! through the ports ([`crate::ports`]). It is generic over them, so tests drive it with the
//! in-memory store and a fake registry, and the binary with DynamoDB, ECR and CloudWatch.
//! [`inventory`] is the scheduled inventory reconciliation, which also audits the pushes whose
//! events never came.

pub mod deletes;
pub mod handler;
pub mod inventory;
pub mod sweep;
