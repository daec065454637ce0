//! Reading live nodes: `GetState` and the health service, as the operator's tool uses them.

use std::time::Duration;

use tonic::transport::Endpoint;

use crate::pb;
use crate::pb::peer_client::PeerClient;

/// Why a node could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The address is not usable.
    #[error("`{0}` is not a usable address")]
    Address(String),
    /// The node did not answer.
    #[error("node at `{address}` did not answer: {reason}")]
    Unreachable { address: String, reason: String },
}

fn endpoint(address: &str, timeout: Duration) -> Result<Endpoint, StatusError> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(uri)
        .map(|e| e.connect_timeout(timeout).timeout(timeout))
        .map_err(|_| StatusError::Address(address.to_string()))
}

/// Reads one node's state.
pub async fn get_state(address: &str, timeout: Duration) -> Result<pb::NodeState, StatusError> {
    let unreachable = |reason: String| StatusError::Unreachable {
        address: address.to_string(),
        reason,
    };
    let channel = endpoint(address, timeout)?
        .connect()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    PeerClient::new(channel)
        .get_state(pb::GetStateRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| unreachable(s.message().to_string()))
}

/// Asks a node's health service whether it is serving.
pub async fn is_serving(address: &str, timeout: Duration) -> Result<bool, StatusError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let unreachable = |reason: String| StatusError::Unreachable {
        address: address.to_string(),
        reason,
    };
    let channel = endpoint(address, timeout)?
        .connect()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|s| unreachable(s.message().to_string()))?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}

/// A one-screen table of nodes' states: one line per node, unreachable nodes included.
pub fn table(states: &[(String, Result<pb::NodeState, StatusError>)]) -> String {
    let mut out = format!(
        "{:<12} {:<22} {:<18} {:>7} {:>10} {:>10} {:>8} {:>8} {:>8}\n",
        "node", "address", "role", "round", "loss", "score", "accepted", "filtered", "missing"
    );
    for (address, state) in states {
        match state {
            Ok(s) => {
                let accepted = s.neighbours.iter().filter(|n| n.weight > 0.0).count();
                let filtered = s.neighbours.iter().filter(|n| n.filtered).count();
                let missing = s.neighbours.iter().filter(|n| !n.received).count();
                let round = format!("{}/{}", s.round + 1, s.rounds);
                out += &format!(
                    "{:<12} {:<22} {:<18} {:>7} {:>10.4} {:>10.4} {:>8} {:>8} {:>8}\n",
                    s.node_id, address, s.role, round, s.loss, s.score, accepted, filtered, missing
                );
            }
            Err(e) => out += &format!("{:<12} {:<22} unreachable: {e}\n", "?", address),
        }
    }
    out
}
