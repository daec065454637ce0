//! Reports: what a run came to, as tables and figures.
//!
//! A run folder holds the topology as run (`topology.toml`) and one `<id>.jsonl` metrics file
//! per honest node, whether the run was launched as processes or simulated in one. This module
//! reads such folders, summarises honest nodes' losses per rule, and draws the paper's
//! figures: the mean and min-max band of honest nodes' loss per round, and the network.

pub mod plot;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::driver::RoundRecord;
use crate::tasks::TestMetrics;
use crate::topology::{RoleKind, Topology, TopologyError};
use plot::{LossSeries, NetworkNode, PlotError};

/// The file a run folder keeps its topology in.
pub const TOPOLOGY_FILE: &str = "topology.toml";

/// How many final rounds the tail mean averages over.
pub const TAIL_ROUNDS: usize = 50;

/// What can go wrong reading or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A metrics line is not a round record.
    #[error("`{path}` line {line}: {reason}")]
    BadRecord {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A node's metrics are missing rounds.
    #[error("`{path}` has {got} rounds, expected {expected}")]
    Incomplete {
        path: PathBuf,
        got: usize,
        expected: usize,
    },
    /// The run's topology is unusable.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A figure could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// The losses of one run: per node, per round.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The topology as run.
    pub topology: Topology,
    /// Per node, the loss of each round; empty for Byzantine nodes.
    pub losses: Vec<Vec<f64>>,
    /// Per node, its last held-out evaluation, for tasks that have held-out data.
    pub tests: Vec<Option<TestMetrics>>,
}

impl RunData {
    /// Reads a run folder. Every honest node must have a metrics file with every round.
    pub fn load(dir: &Path) -> Result<Self, ReportError> {
        let topology_path = dir.join(TOPOLOGY_FILE);
        let text = std::fs::read_to_string(&topology_path).map_err(|source| ReportError::Io {
            path: topology_path.clone(),
            source,
        })?;
        let topology = Topology::from_toml(&text)?;
        let mut losses = Vec::with_capacity(topology.nodes.len());
        let mut tests = Vec::with_capacity(topology.nodes.len());
        for node in &topology.nodes {
            if node.role == RoleKind::Byzantine {
                losses.push(Vec::new());
                tests.push(None);
                continue;
            }
            let path = dir.join(format!("{}.jsonl", node.id));
            let records = read_records(&path)?;
            if records.len() != topology.rounds as usize {
                return Err(ReportError::Incomplete {
                    path,
                    got: records.len(),
                    expected: topology.rounds as usize,
                });
            }
            tests.push(last_test(&records));
            losses.push(records.into_iter().map(|r| r.loss).collect());
        }
        Ok(Self {
            topology,
            losses,
            tests,
        })
    }

    /// Indices of the honest nodes.
    pub fn honest(&self) -> Vec<usize> {
        self.topology.honest().collect()
    }
}

/// The last held-out evaluation among a node's round records.
pub fn last_test(records: &[RoundRecord]) -> Option<TestMetrics> {
    records.iter().rev().find_map(|r| r.test)
}

/// Reads one node's metrics file.
pub fn read_records(path: &Path) -> Result<Vec<RoundRecord>, ReportError> {
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut records = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| ReportError::BadRecord {
            path: path.to_path_buf(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Honest nodes' losses under one rule, summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The rule (or other label) of the run.
    pub label: String,
    /// How many honest nodes there were.
    pub honest: usize,
    /// Mean, min and max over honest nodes of the last round's loss.
    pub final_mean: f64,
    pub final_min: f64,
    pub final_max: f64,
    /// Mean over honest nodes of each node's mean loss over the last [`TAIL_ROUNDS`] rounds.
    pub tail_mean: f64,
    /// Each honest node's mean loss over the last [`TAIL_ROUNDS`] rounds, by node id.
    pub node_tail: Vec<(String, f64)>,
    /// Mean over honest nodes of the last held-out accuracy, for tasks that evaluate one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// Each honest node's last held-out accuracy, by node id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_test_accuracy: Vec<(String, f64)>,
}

/// The mean of a slice, NaN when empty.
fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Summarises a run's honest nodes.
pub fn summarize(label: &str, run: &RunData) -> Summary {
    let honest = run.honest();
    let finals: Vec<f64> = honest
        .iter()
        .filter_map(|&k| run.losses[k].last().copied())
        .collect();
    let node_tail: Vec<(String, f64)> = honest
        .iter()
        .map(|&k| {
            let l = &run.losses[k];
            let tail = &l[l.len().saturating_sub(TAIL_ROUNDS)..];
            (run.topology.nodes[k].id.clone(), mean(tail.iter().copied()))
        })
        .collect();
    let node_test_accuracy: Vec<(String, f64)> = honest
        .iter()
        .filter_map(|&k| {
            let test = run.tests.get(k).copied().flatten()?;
            Some((run.topology.nodes[k].id.clone(), test.accuracy))
        })
        .collect();
    Summary {
        label: label.to_string(),
        honest: honest.len(),
        test_accuracy: (!node_test_accuracy.is_empty())
            .then(|| mean(node_test_accuracy.iter().map(|(_, a)| *a))),
        node_test_accuracy,
        final_mean: mean(finals.iter().copied()),
        final_min: finals.iter().copied().fold(f64::INFINITY, f64::min),
        final_max: finals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        tail_mean: mean(node_tail.iter().map(|(_, v)| *v)),
        node_tail,
    }
}

/// A plain-text table of summaries, one row per rule, with the mean held-out accuracy when
/// the task evaluates one.
pub fn table(summaries: &[Summary]) -> String {
    let tested = summaries.iter().any(|s| s.test_accuracy.is_some());
    let mut out = format!(
        "{:<14} {:>6} {:>12} {:>12} {:>12} {:>14}",
        "rule", "honest", "final mean", "final min", "final max", "last-50 mean"
    );
    if tested {
        out += &format!(" {:>14}", "test accuracy");
    }
    out.push('\n');
    for s in summaries {
        out += &format!(
            "{:<14} {:>6} {:>12.4} {:>12.4} {:>12.4} {:>14.4}",
            s.label, s.honest, s.final_mean, s.final_min, s.final_max, s.tail_mean
        );
        if tested {
            let accuracy = s
                .test_accuracy
                .map_or("-".to_string(), |a| format!("{:.4}", a));
            out += &format!(" {accuracy:>14}");
        }
        out.push('\n');
    }
    out
}

/// Each honest node's last held-out accuracy under each rule, one row per node, when the
/// task evaluates one; `None` otherwise.
pub fn node_accuracy_table(summaries: &[Summary]) -> Option<String> {
    let first = summaries
        .iter()
        .find(|s| !s.node_test_accuracy.is_empty())?;
    let mut out = format!("{:<14}", "test accuracy");
    for s in summaries {
        out += &format!(" {:>14}", s.label);
    }
    out.push('\n');
    for (node, _) in &first.node_test_accuracy {
        out += &format!("{node:<14}");
        for s in summaries {
            let accuracy = s
                .node_test_accuracy
                .iter()
                .find(|(n, _)| n == node)
                .map_or("-".to_string(), |(_, a)| format!("{:.4}", a));
            out += &format!(" {accuracy:>14}");
        }
        out.push('\n');
    }
    Some(out)
}

/// The per-round mean and min-max band of honest nodes' loss.
pub fn loss_series(label: &str, run: &RunData) -> LossSeries {
    let honest = run.honest();
    let rounds = run.topology.rounds as usize;
    let mut series = LossSeries {
        label: label.to_string(),
        ..LossSeries::default()
    };
    for i in 0..rounds {
        let at = || honest.iter().filter_map(|&k| run.losses[k].get(i).copied());
        series.mean.push(mean(at()));
        series.min.push(at().fold(f64::INFINITY, f64::min));
        series.max.push(at().fold(f64::NEG_INFINITY, f64::max));
    }
    series
}

/// Draws the network picture of a topology: nodes at their positions (or on a circle when the
/// topology gives none), coloured by cluster, Byzantine nodes in red.
pub fn draw_network(base: &Path, topology: &Topology) -> Result<Vec<PathBuf>, ReportError> {
    let n = topology.nodes.len().max(1) as f64;
    let nodes: Vec<NetworkNode> = topology
        .nodes
        .iter()
        .enumerate()
        .map(|(k, node)| {
            let angle = std::f64::consts::TAU * k as f64 / n;
            let [x, y] = node.position.unwrap_or([angle.cos(), angle.sin()]);
            NetworkNode {
                x,
                y,
                cluster: node.cluster.unwrap_or(0),
                byzantine: node.role == RoleKind::Byzantine,
                label: node.id.clone(),
            }
        })
        .collect();
    let title = format!("{}: network", display_name(topology));
    Ok(plot::network(base, &title, &nodes, &topology.edge_list())?)
}

/// Draws the loss bands of several runs, one panel per run.
pub fn draw_losses(
    base: &Path,
    topology: &Topology,
    series: &[LossSeries],
) -> Result<Vec<PathBuf>, ReportError> {
    let title = format!("{}: loss of honest nodes", display_name(topology));
    Ok(plot::loss_bands(base, &title, series)?)
}

fn display_name(topology: &Topology) -> &str {
    if topology.name.is_empty() {
        "network"
    } else {
        &topology.name
    }
}

/// Writes the topology of a run into its folder, creating the folder.
pub fn write_topology(dir: &Path, topology: &Topology) -> Result<PathBuf, ReportError> {
    let path = dir.join(TOPOLOGY_FILE);
    let io = |source| ReportError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(&path, topology.to_toml()?).map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: &str = r#"
        rounds = 3
        [[nodes]]
        id = "a"
        address = "h:1"
        [[nodes]]
        id = "b"
        address = "h:2"
        [[nodes]]
        id = "z"
        address = "h:3"
        role = "byzantine"
    "#;

    // Losses a: [4, 2, 1], b: [2, 2, 3]: the final losses are 1 and 3 (mean 2), the tail means
    // (all three rounds) 7/3 and 7/3, and the per-round means 3, 2, 2.
    #[test]
    fn summary_and_series_by_hand() {
        let run = RunData {
            topology: Topology::from_toml(NET)
                .map_err(|e| e.to_string())
                .unwrap_or_else(|e| panic!("{e}")),
            losses: vec![vec![4.0, 2.0, 1.0], vec![2.0, 2.0, 3.0], vec![]],
            tests: vec![None; 3],
        };
        let s = summarize("loss", &run);
        assert_eq!(
            (s.honest, s.final_mean, s.final_min, s.final_max),
            (2, 2.0, 1.0, 3.0)
        );
        assert!((s.tail_mean - 7.0 / 3.0).abs() < 1e-12);
        let series = loss_series("loss", &run);
        assert_eq!(series.mean, vec![3.0, 2.0, 2.0]);
        assert_eq!(series.max, vec![4.0, 2.0, 3.0]);
        assert!(table(std::slice::from_ref(&s)).contains("loss"));
        assert!(!table(std::slice::from_ref(&s)).contains("accuracy"));
        assert_eq!(node_accuracy_table(&[s]), None);

        // With held-out evaluations (a at 0.5, b at 0.75), the tables show them.
        let test = |accuracy| {
            Some(TestMetrics {
                round: 2,
                loss: 1.0,
                accuracy,
            })
        };
        let tested = RunData {
            tests: vec![test(0.5), test(0.75), None],
            ..run
        };
        let s = summarize("loss", &tested);
        assert_eq!(s.test_accuracy, Some(0.625));
        assert!(table(std::slice::from_ref(&s)).contains("0.6250"));
        let nodes = node_accuracy_table(&[s]).unwrap_or_default();
        assert!(
            nodes.contains("0.5000") && nodes.contains("0.7500"),
            "{nodes}"
        );
        assert!(!nodes.contains('z'), "{nodes}");
    }

    #[test]
    fn bad_metrics_lines_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("byzmtl-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("a.jsonl");
        std::fs::write(&path, "{\"node\":\"a\"}\n").ok();
        let err = read_records(&path).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("a.jsonl") && e.contains("line 1")));
        std::fs::remove_dir_all(&dir).ok();
    }
}
