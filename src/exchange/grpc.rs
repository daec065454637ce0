//! The gRPC exchange: neighbours' models fetched with `byzmtl.v1.Peer/GetModel`.
//!
//! Every neighbour has one lazily connected channel. Gathering a round sends all requests at
//! once, each with the time left until the round deadline as its gRPC deadline. A neighbour
//! that is not up yet (connection refused) is asked again until the deadline, which is how
//! nodes started seconds apart find each other. Every answer is validated before use: the
//! round and sender must be the ones asked for, the message must fit the size limit, and the
//! tensors must match my layout with finite values.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::{Exchange, Fetch, Gathered};
use crate::params::{Layout, ModelError};
use crate::pb;
use crate::pb::peer_client::PeerClient;
use crate::store::ModelStore;

/// How long to wait before asking a neighbour that is not up yet again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

struct Neighbour {
    id: String,
    client: PeerClient<Channel>,
}

/// Links a node to its neighbours over gRPC.
pub struct GrpcExchange {
    me: String,
    own: Arc<ModelStore>,
    layout: Arc<Layout>,
    neighbours: Vec<Neighbour>,
}

/// A neighbour address that is not a usable endpoint.
#[derive(Debug, thiserror::Error)]
#[error("neighbour `{id}` has an unusable address `{address}`: {reason}")]
pub struct BadEndpoint {
    id: String,
    address: String,
    reason: String,
}

impl GrpcExchange {
    /// An exchange for node `me`, publishing into `own`, fetching from `neighbours` (id and
    /// `host:port`, in topology order), accepting messages of at most `max_message_bytes`.
    pub fn new(
        me: String,
        own: Arc<ModelStore>,
        layout: Arc<Layout>,
        neighbours: &[(String, String)],
        max_message_bytes: usize,
    ) -> Result<Self, BadEndpoint> {
        let neighbours = neighbours
            .iter()
            .map(|(id, address)| {
                let bad = |reason: String| BadEndpoint {
                    id: id.clone(),
                    address: address.clone(),
                    reason,
                };
                let endpoint = Endpoint::from_shared(format!("http://{address}"))
                    .map_err(|e| bad(e.to_string()))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true);
                let client = PeerClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(max_message_bytes);
                Ok(Neighbour {
                    id: id.clone(),
                    client,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            me,
            own,
            layout,
            neighbours,
        })
    }

    /// Asks one neighbour for its model of `round` until it answers or `deadline` passes.
    async fn fetch(&self, neighbour: &Neighbour, round: u64, deadline: Instant) -> Fetch {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Fetch::Timeout;
            }
            let mut request = tonic::Request::new(pb::GetModelRequest {
                round,
                requester: self.me.clone(),
            });
            request.set_timeout(left);

            let mut client = neighbour.client.clone();
            let answer = client.get_model(request);
            let status = match tokio::time::timeout_at(deadline, answer).await {
                Err(_) => return Fetch::Timeout,
                Ok(Ok(response)) => return self.check(neighbour, round, response.into_inner()),
                Ok(Err(status)) => status,
            };
            match status.code() {
                // Not up yet, or restarting: ask again shortly.
                Code::Unavailable => tokio::time::sleep(RETRY_PAUSE.min(left)).await,
                Code::DeadlineExceeded | Code::Cancelled => return Fetch::Timeout,
                code => {
                    let kind = match code {
                        Code::OutOfRange => "out-of-range",
                        Code::ResourceExhausted => "oversized",
                        Code::Internal => "malformed",
                        _ => "error",
                    };
                    return Fetch::Rejected {
                        kind,
                        reason: format!("{code:?}: {}", truncate(status.message())),
                    };
                }
            }
        }
    }

    /// Validates an answer against what was asked and my layout.
    fn check(&self, neighbour: &Neighbour, round: u64, response: pb::GetModelResponse) -> Fetch {
        let checked = if response.round != round {
            Err(ModelError::Round {
                expected: round,
                got: response.round,
            })
        } else if response.node_id != neighbour.id {
            Err(ModelError::Sender {
                got: truncate(&response.node_id),
            })
        } else {
            self.layout.from_wire(&response.tensors)
        };
        match checked {
            Ok(values) => Fetch::Model(values),
            Err(e) => Fetch::Rejected {
                kind: e.kind(),
                reason: e.to_string(),
            },
        }
    }
}

impl Exchange for GrpcExchange {
    fn publish(&self, round: u64, model: Arc<[f32]>) {
        self.own.publish(round, model);
    }

    async fn gather(&self, round: u64, deadline: Instant) -> Vec<Gathered> {
        let start = Instant::now();
        let requests = self.neighbours.iter().map(|n| async move {
            let fetch = self.fetch(n, round, deadline).await;
            Gathered {
                fetch,
                latency: start.elapsed(),
            }
        });
        futures::future::join_all(requests).await
    }
}

/// Keeps what a peer sent short enough to log.
fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}
