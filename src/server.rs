//! The gRPC server of a node: `byzmtl.v1.Peer`, health and reflection.
//!
//! [`serve`] takes an already-bound listener and a shutdown signal, so tests bind
//! 127.0.0.1:0 and the daemon binds its configured address. Store errors become gRPC statuses
//! in one place, [`status_of`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, WatchStream};
use tonic::{Request, Response, Status};

use crate::params::Layout;
use crate::pb;
use crate::pb::peer_server::{Peer, PeerServer};
use crate::store::{ModelStore, StoreError};

/// The longest a `GetModel` call waits for an unpublished round when the caller sets no
/// deadline of its own.
const LONGEST_WAIT: Duration = Duration::from_secs(300);

/// The `byzmtl.v1.Peer` service of one node.
pub struct PeerService {
    node_id: String,
    layout: Arc<Layout>,
    store: Arc<ModelStore>,
    state: watch::Receiver<pb::NodeState>,
}

impl PeerService {
    /// The service of node `node_id`, serving models from `store` laid out by `layout` and
    /// state from `state`.
    pub fn new(
        node_id: String,
        layout: Arc<Layout>,
        store: Arc<ModelStore>,
        state: watch::Receiver<pb::NodeState>,
    ) -> Self {
        Self {
            node_id,
            layout,
            store,
            state,
        }
    }
}

/// The gRPC status for a request the store cannot answer.
pub fn status_of(e: StoreError) -> Status {
    match e {
        StoreError::Evicted { .. } | StoreError::BeyondLastRound { .. } => {
            Status::out_of_range(e.to_string())
        }
        StoreError::Stopped { .. } => Status::unavailable(e.to_string()),
    }
}

type StateStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::NodeState, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    #[tracing::instrument(skip_all, fields(round = request.get_ref().round))]
    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        let pb::GetModelRequest { round, requester } = request.into_inner();
        let shown: String = requester.chars().take(64).collect();
        tracing::debug!(requester = %shown, "model asked for");

        // Wait for the round; the caller's gRPC deadline normally ends the wait first.
        // A Byzantine node's store may answer with a malformed message, sent as it is.
        let answer = self.store.get_wire(round, &requester, &self.layout);
        let tensors = tokio::time::timeout(LONGEST_WAIT, answer)
            .await
            .map_err(|_| Status::deadline_exceeded(format!("round {round} not reached")))?
            .map_err(status_of)?;
        Ok(Response::new(pb::GetModelResponse {
            node_id: self.node_id.clone(),
            round,
            tensors,
        }))
    }

    async fn get_state(
        &self,
        _request: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::NodeState>, Status> {
        Ok(Response::new(self.state.borrow().clone()))
    }

    type WatchStateStream = StateStream;

    /// Yields the current state at once, then every state the driver announces (one per
    /// finished round, and the `lingering` and `done` phases). The stream ends when the node
    /// drops its state, after the last one has been yielded.
    async fn watch_state(
        &self,
        _request: Request<pb::WatchStateRequest>,
    ) -> Result<Response<Self::WatchStateStream>, Status> {
        use tokio_stream::StreamExt;
        tracing::debug!("state watcher joined");
        let stream = WatchStream::new(self.state.clone()).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Errors of the server itself.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not be set up from the compiled descriptor.
    #[error("cannot build server reflection: {0}")]
    Reflection(String),
    /// The transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `service`, health and reflection on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: PeerService,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<PeerServer<PeerService>>()
        .await;

    // Each reflection version also describes the other, so that a client lists every service
    // the server has whichever version it speaks.
    let reflection = |e: tonic_reflection::server::Error| ServeError::Reflection(e.to_string());
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(reflection)?;

    let peer = PeerServer::new(service)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(peer)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
