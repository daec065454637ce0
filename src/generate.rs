//! Generated topologies: the paper's target-localization network and smaller variants.
//!
//! The paper's setup (appendix B.1, and the authors' reference code): nodes uniform in
//! `[0, 3]^2`, edges within radius 1 with at most 10 neighbours including self, four targets
//! near (10, 10), (10, 20), (20, 10) and (20, 20) with a quarter of the nodes each, Byzantine
//! nodes sending coordinates uniform in [15, 16], distance noise with standard deviation in
//! [0.1, 0.2] and direction noise in [0.01, 0.02] (0.1 for five nodes), step size 0.1,
//! forgetting factor 0.1, initial score 10.

use rand::Rng;
use rand::seq::index::sample;

use crate::attacks::AttackSpec;
use crate::rules::Rule;
use crate::seed::{self, Stream};
use crate::tasks::TaskSettings;
use crate::topology::{Edges, NodeSpec, RoleKind, Topology};

/// The paper's four target positions.
pub const TARGETS: [[f64; 2]; 4] = [
    [10.84, 10.76],
    [20.42, 20.26],
    [20.51, 10.40],
    [10.78, 20.30],
];

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperSetup {
    /// A name for the network.
    pub name: String,
    /// How many nodes.
    pub nodes: usize,
    /// How many of them are Byzantine, chosen at random.
    pub byzantine: usize,
    /// How many rounds.
    pub rounds: u64,
    /// The seed for positions, roles and noise levels, and of the network.
    pub seed: u64,
    /// The side of the square the nodes are placed in.
    pub side: f64,
    /// The edge radius.
    pub radius: f64,
    /// The neighbourhood cap, self included.
    pub max_neighbours: usize,
    /// The first port of the node addresses (`127.0.0.1:<port + index>`).
    pub base_port: u16,
}

impl PaperSetup {
    /// The paper's network: 100 nodes, 20 Byzantine, 500 rounds.
    pub fn paper() -> Self {
        Self {
            name: "paper".into(),
            nodes: 100,
            byzantine: 20,
            rounds: 500,
            seed: 1,
            side: 3.0,
            radius: 1.0,
            max_neighbours: 10,
            base_port: 7000,
        }
    }

    /// The demo: 20 nodes, 4 Byzantine, 300 rounds, on a smaller square so the graph stays
    /// connected.
    pub fn demo() -> Self {
        Self {
            name: "demo".into(),
            nodes: 20,
            byzantine: 4,
            rounds: 300,
            side: 1.5,
            ..Self::paper()
        }
    }

    /// Builds the topology.
    pub fn build(&self) -> Topology {
        let mut rng = seed::rng(self.seed, Stream::Topology, &[self.nodes as u64]);
        let n = self.nodes;

        // Roles, then per-node noise levels, as in the authors' code.
        let byzantine: Vec<usize> = sample(&mut rng, n, self.byzantine.min(n)).into_vec();
        let noisy: Vec<usize> = sample(&mut rng, n, 5.min(n)).into_vec();
        let quarter = n.div_ceil(4).max(1);

        let nodes = (0..n)
            .map(|k| {
                let position = [
                    rng.random_range(0.0..self.side),
                    rng.random_range(0.0..self.side),
                ];
                let cluster = (k / quarter).min(3);
                let distance_noise = 0.1 + 0.1 * rng.random::<f64>();
                let direction_noise = if noisy.contains(&k) {
                    0.1
                } else {
                    0.01 + 0.01 * rng.random::<f64>()
                };
                let is_byzantine = byzantine.contains(&k);
                NodeSpec {
                    id: format!("node-{k}"),
                    address: format!("127.0.0.1:{}", u32::from(self.base_port) + k as u32),
                    listen: None,
                    metrics: None,
                    role: if is_byzantine {
                        RoleKind::Byzantine
                    } else {
                        RoleKind::Honest
                    },
                    attack: is_byzantine.then_some(AttackSpec::Uniform {
                        low: 15.0,
                        high: 16.0,
                    }),
                    position: Some(round3(position)),
                    cluster: Some(cluster),
                    shard: serde_json::json!({
                        "target": TARGETS[cluster],
                        "distance_noise": round3([distance_noise, 0.0])[0],
                        "direction_noise": round3([direction_noise, 0.0])[0],
                    }),
                }
            })
            .collect();

        Topology {
            name: self.name.clone(),
            seed: self.seed,
            rounds: self.rounds,
            rule: Rule::LossFiltered,
            step_size: 0.1,
            forgetting_factor: 0.1,
            initial_score: 10.0,
            round_deadline_ms: 5_000,
            startup_grace_ms: 60_000,
            linger_ms: 10_000,
            history: 16,
            max_message_bytes: 16 << 20,
            out_dir: None,
            task: TaskSettings::default(),
            edges: Edges::Geometric {
                radius: self.radius,
                max_neighbours: Some(self.max_neighbours),
            },
            nodes,
        }
    }
}

/// Rounds coordinates to 4 decimals, so generated files read well.
fn round3(p: [f64; 2]) -> [f64; 2] {
    p.map(|v| (v * 1e4).round() / 1e4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_network_has_the_paper_shape() {
        let t = PaperSetup::paper().build();
        assert!(t.validate().is_ok());
        assert_eq!(t.nodes.len(), 100);
        let byzantine = t
            .nodes
            .iter()
            .filter(|n| n.role == RoleKind::Byzantine)
            .count();
        assert_eq!(byzantine, 20);
        for c in 0..4 {
            assert_eq!(t.nodes.iter().filter(|n| n.cluster == Some(c)).count(), 25);
        }

        // The cap: no node has more than 9 neighbours besides itself.
        let adjacency = t.adjacency();
        assert!(adjacency.iter().all(|ns| ns.len() <= 9));
        assert!(adjacency.iter().map(Vec::len).sum::<usize>() > 300);

        // Same seed, same network; it survives a round trip through TOML.
        assert_eq!(PaperSetup::paper().build(), t);
        let text = t.to_toml().unwrap_or_default();
        assert_eq!(Topology::from_toml(&text).ok(), Some(t));
    }
}
