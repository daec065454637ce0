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
        .map_err(|e| unreachable(chain(&e)))?;
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
        .map_err(|e| unreachable(chain(&e)))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|s| unreachable(s.message().to_string()))?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}

/// A one-screen table of nodes' states: one line per node, unreachable nodes included.
///
/// `accepted`, `filtered` and `missing` count neighbours (the node itself is not counted):
/// those with a positive weight in the last round, those the rule filtered out, and those
/// whose model did not take part. A Byzantine node runs no rounds of its own, so its loss,
/// score and counts are shown as `-`.
pub fn table(states: &[(String, Result<pb::NodeState, StatusError>)]) -> String {
    let header = [
        "node", "address", "role", "phase", "round", "loss", "score", "accepted", "filtered",
        "missing",
    ];
    let rows = states.iter().map(|(address, state)| {
        let s = match state {
            Ok(s) => s,
            Err(e) => return vec!["?".into(), address.clone(), format!("unreachable: {e}")],
        };
        let mut row = vec![
            s.node_id.clone(),
            address.clone(),
            s.role.clone(),
            s.phase.clone(),
            format!("{}/{}", s.round + 1, s.rounds),
        ];
        if s.role.starts_with("byzantine") {
            row.extend(std::iter::repeat_n("-".to_string(), 5));
        } else {
            let count = |f: fn(&pb::NeighbourState) -> bool| {
                s.neighbours.iter().filter(|n| f(n)).count().to_string()
            };
            row.extend([
                format!("{:.4}", s.loss),
                format!("{:.4}", s.score),
                count(|n| n.weight > 0.0),
                count(|n| n.filtered),
                count(|n| !n.received),
            ]);
        }
        row
    });
    columns(&header, "<<<<>>>>>>", rows.collect())
}

/// A table of one node's view of its neighbours, one line per neighbour, and a last line
/// for the node itself (its own score and weight).
///
/// `status` is `accepted` (positive weight), `filtered` (the rule filtered it out),
/// `missing` (its model did not take part in the last round) or `-` (none of these, as on a
/// Byzantine node, which weighs nobody).
pub fn neighbour_table(state: &pb::NodeState) -> String {
    let header = [
        "neighbour",
        "address",
        "last round",
        "score",
        "weight",
        "status",
        "fetch ms",
        "timeouts",
        "rejected",
        "last reject reason",
    ];
    let round = |r: i64| {
        if r < 0 {
            "-".to_string()
        } else {
            r.to_string()
        }
    };
    let mut rows: Vec<Vec<String>> = state
        .neighbours
        .iter()
        .map(|n| {
            let status = if n.filtered {
                "filtered"
            } else if !n.received {
                "missing"
            } else if n.weight > 0.0 {
                "accepted"
            } else {
                "-"
            };
            vec![
                n.node_id.clone(),
                n.address.clone(),
                round(n.last_round),
                format!("{:.4}", n.score),
                format!("{:.4}", n.weight),
                status.into(),
                format!("{:.2}", n.fetch_millis),
                n.timeouts.to_string(),
                n.rejected.to_string(),
                n.last_reject_reason.clone(),
            ]
        })
        .collect();
    rows.push(vec![
        format!("{} (self)", state.node_id),
        state.address.clone(),
        round(state.round),
        format!("{:.4}", state.score),
        format!("{:.4}", state.weight),
    ]);
    columns(&header, "<<>>><>>><", rows)
}

/// Lays out `rows` under `header` in columns two spaces apart, each aligned as `align` says
/// (`<` left, `>` right, one character per column). A row may be shorter than the header; if
/// its last cell falls in a left-aligned column, it is a message that may run past the
/// columns it skips, and does not widen its column.
fn columns(header: &[&str], align: &str, rows: Vec<Vec<String>>) -> String {
    let n = header.len();
    let left: Vec<bool> = align.chars().map(|c| c == '<').collect();
    debug_assert_eq!(left.len(), n);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            let message = row.len() < n && i + 1 == row.len() && left[i];
            if !message {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }

    let header = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line += "  ";
            }
            let w = widths[i];
            if left[i] {
                line += &format!("{cell:<w$}");
            } else {
                line += &format!("{cell:>w$}");
            }
        }
        out += line.trim_end();
        out += "\n";
    }
    out
}

/// An error and its sources, joined with `: `, so that "transport error" says what failed.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text += ": ";
            text += &next;
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neighbour(id: &str, weight: f64, filtered: bool, received: bool) -> pb::NeighbourState {
        pb::NeighbourState {
            node_id: id.into(),
            address: format!("10.0.0.{}:7000", id.len()),
            last_round: if received { 41 } else { -1 },
            score: 1.5,
            weight,
            filtered,
            received,
            fetch_millis: if received { 0.5 } else { 0.0 },
            timeouts: if received { 0 } else { 42 },
            ..Default::default()
        }
    }

    fn honest() -> pb::NodeState {
        pb::NodeState {
            node_id: "a".into(),
            role: "honest".into(),
            phase: "gather".into(),
            round: 41,
            rounds: 100,
            loss: 0.25,
            score: 0.5,
            weight: 0.75,
            address: "10.0.0.1:7000".into(),
            neighbours: vec![
                neighbour("b", 0.25, false, true),
                neighbour("zz", 0.0, true, true),
                neighbour("eee", 0.0, false, false),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn table_counts_neighbours_and_dashes_byzantine_numbers() {
        let byzantine = pb::NodeState {
            node_id: "zz".into(),
            role: "byzantine:uniform".into(),
            phase: "serving".into(),
            round: 40,
            rounds: 100,
            ..Default::default()
        };
        let unreachable = StatusError::Unreachable {
            address: "10.0.0.3:7000".into(),
            reason: "connection refused".into(),
        };
        let rows = vec![
            ("10.0.0.1:7000".to_string(), Ok(honest())),
            ("10.0.0.2:7000".to_string(), Ok(byzantine)),
            ("10.0.0.3:7000".to_string(), Err(unreachable)),
        ];
        let expected = "\
node  address        role               phase     round    loss   score  accepted  filtered  missing
a     10.0.0.1:7000  honest             gather   42/100  0.2500  0.5000         1         1        1
zz    10.0.0.2:7000  byzantine:uniform  serving  41/100       -       -         -         -        -
?     10.0.0.3:7000  unreachable: node at `10.0.0.3:7000` did not answer: connection refused
";
        assert_eq!(table(&rows), expected);
    }

    #[test]
    fn neighbour_table_shows_each_neighbour_and_the_node_itself() {
        let expected = "\
neighbour  address        last round   score  weight  status    fetch ms  timeouts  rejected  last reject reason
b          10.0.0.1:7000          41  1.5000  0.2500  accepted      0.50         0         0
zz         10.0.0.2:7000          41  1.5000  0.0000  filtered      0.50         0         0
eee        10.0.0.3:7000           -  1.5000  0.0000  missing       0.00        42         0
a (self)   10.0.0.1:7000          41  0.5000  0.7500
";
        assert_eq!(neighbour_table(&honest()), expected);
    }
}
