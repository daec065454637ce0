//! Exchanges: how a node publishes its adapted model and gathers its neighbours'.
//!
//! The round engine knows nothing of the transport. A driver hands an exchange the adapted
//! model of round `i` and asks it for every neighbour's adapted model of round `i` by a
//! deadline. The daemon uses [`grpc::GrpcExchange`]; tests and in-process runs use
//! [`memory::MemoryExchange`]. Both validate what they receive against the node's layout.

pub mod grpc;
pub mod memory;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// What came of asking one neighbour for its model of a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetch {
    /// The model arrived and passed validation.
    Model(Vec<f32>),
    /// Nothing usable arrived before the round deadline.
    Timeout,
    /// The neighbour answered with something unusable.
    Rejected {
        /// A short, stable name for the reason, for counters.
        kind: &'static str,
        /// The reason in words.
        reason: String,
    },
}

/// One neighbour's answer and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Gathered {
    /// What arrived.
    pub fetch: Fetch,
    /// Time from the first request to the answer.
    pub latency: Duration,
}

/// A node's link to its neighbours.
pub trait Exchange: Send + Sync {
    /// Makes my adapted model of `round` available to my neighbours.
    fn publish(&self, round: u64, model: Arc<[f32]>);

    /// Asks every neighbour, all at once, for its adapted model of `round`, and waits until
    /// each has answered or `deadline` has passed. Returns one entry per neighbour, in
    /// topology order.
    fn gather(&self, round: u64, deadline: Instant) -> impl Future<Output = Vec<Gathered>> + Send;
}
