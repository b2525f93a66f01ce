//! Webhooks to the host (PROTOCOL.md §8). So far: the signature the host verifies.
//! The outbox and its delivery worker come next (issue 8).

pub mod signature;
