//! byzmtl: Byzantine-resilient distributed multi-task learning as a network of peer nodes.
//!
//! Every node learns its own task from its own data, and improves by combining its
//! neighbours' models. Which neighbours to trust is learned online, by the rule of Li, Abbas
//! and Koutsoukos (NeurIPS 2020): each round a node scores every neighbour's adapted model by
//! its loss on the node's own batch, keeps an exponential moving average of that score, drops
//! every neighbour that scores worse than its own model, and weights the rest by inverse
//! score. A node whose neighbours are all Byzantine thus learns as well as it would alone, and
//! one with good neighbours learns better.
//!
//! # Layout
//!
//! - [`topology`]: the topology file, its validation, and settings layering;
//! - [`params`]: models as flat vectors, their named tensors and wire form;
//! - [`rules`]: the weight rules, as pure functions on scores;
//! - [`tasks`]: learning problems (data and model) behind the [`tasks::Task`] trait;
//! - [`attacks`]: what Byzantine nodes send;
//! - [`engine`]: one node's adapt-score-weigh-combine round, free of any transport;
//! - [`exchange`]: publishing and gathering models, over gRPC or in memory;
//! - [`store`]: a node's published models, with a short history;
//! - [`driver`]: runs a node's rounds against an exchange and keeps its state and metrics;
//! - [`metrics`]: a node's Prometheus metrics and the HTTP endpoint that serves them;
//! - [`server`]: the `byzmtl.v1.Peer` gRPC service, health and reflection;
//! - [`status`]: reading live nodes for operators;
//! - [`node`]: one daemon node assembled from a topology entry;
//! - [`launcher`]: a whole topology as local processes on loopback;
//! - [`compose`]: a topology as a docker-compose file, a swarm stack or Kubernetes manifests;
//! - [`simulate`]: a whole topology in one process, in lockstep;
//! - [`generate`]: the paper's target-localization network and smaller variants;
//! - [`report`] and [`compare`]: summaries, tables and figures of runs, one run per rule;
//! - [`logging`]: log output and signals for the binaries;
//! - [`seed`]: deterministic random streams derived from the topology's seed;
//! - [`pb`]: the generated protobuf types.

pub mod attacks;
pub mod compare;
pub mod compose;
pub mod driver;
pub mod engine;
pub mod exchange;
pub mod generate;
pub mod launcher;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod params;
pub mod report;
pub mod rules;
pub mod seed;
pub mod server;
pub mod simulate;
pub mod status;
pub mod store;
pub mod tasks;
pub mod topology;

/// The generated protobuf and gRPC code of `proto/byzmtl/v1/peer.proto`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("byzmtl.v1");

    /// The encoded file descriptor set that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("byzmtl_descriptor");
}
