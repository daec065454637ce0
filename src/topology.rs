//! The topology file: one TOML file that describes a whole network.
//!
//! The same file serves a local launch, a docker-compose network and nodes on separate
//! machines. It holds the nodes (id, addresses, role, shard), the edges (a list or a
//! generator), the rule and its parameters, and the round settings. Settings are layered:
//! the file, then `BYZMTL_*` environment variables, then command-line flags, each overriding
//! the one before (see [`Overrides`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::attacks::AttackSpec;
use crate::rules::Rule;
use crate::tasks::{TaskContext, TaskKind, TaskSettings};

/// A whole network, as read from a topology file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// A name for the network, used in reports.
    #[serde(default)]
    pub name: String,
    /// The seed every random stream of the network derives from.
    #[serde(default)]
    pub seed: u64,
    /// How many rounds every node runs.
    pub rounds: u64,
    /// The weight rule honest nodes use.
    #[serde(default)]
    pub rule: Rule,
    /// Step size (learning rate) of the local step, `mu_k`.
    #[serde(default = "defaults::step_size")]
    pub step_size: f64,
    /// Weight of the newest sample in a score, `nu_k`, in (0, 1].
    #[serde(default = "defaults::forgetting_factor")]
    pub forgetting_factor: f64,
    /// Every score's value before the first round.
    #[serde(default = "defaults::initial_score")]
    pub initial_score: f64,
    /// How long a round waits for neighbours' models, in milliseconds.
    #[serde(default = "defaults::round_deadline_ms")]
    pub round_deadline_ms: u64,
    /// How long round 0 waits for neighbours to come up, in milliseconds.
    #[serde(default = "defaults::startup_grace_ms")]
    pub startup_grace_ms: u64,
    /// The longest a node keeps serving after its last round, in milliseconds.
    #[serde(default = "defaults::linger_ms")]
    pub linger_ms: u64,
    /// How many past rounds a node keeps its adapted models for.
    #[serde(default = "defaults::history")]
    pub history: usize,
    /// The largest model message a node accepts, in bytes.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// Where nodes write their per-round metrics (`<out_dir>/<id>.jsonl`), if anywhere.
    #[serde(default)]
    pub out_dir: Option<PathBuf>,
    /// The task settings shared by every node.
    #[serde(default)]
    pub task: TaskSettings,
    /// The edges, listed or generated.
    #[serde(default)]
    pub edges: Edges,
    /// The nodes, in order.
    pub nodes: Vec<NodeSpec>,
}

mod defaults {
    pub fn step_size() -> f64 {
        0.1
    }
    pub fn forgetting_factor() -> f64 {
        0.1
    }
    pub fn initial_score() -> f64 {
        10.0
    }
    pub fn round_deadline_ms() -> u64 {
        2_000
    }
    pub fn startup_grace_ms() -> u64 {
        30_000
    }
    pub fn linger_ms() -> u64 {
        10_000
    }
    pub fn history() -> usize {
        16
    }
    pub fn max_message_bytes() -> usize {
        16 << 20
    }
}

/// One node of the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's unique id.
    pub id: String,
    /// The `host:port` neighbours reach the node at.
    pub address: String,
    /// The `host:port` the node binds, if not its advertised address.
    #[serde(default)]
    pub listen: Option<String>,
    /// Where the node serves Prometheus metrics over HTTP, if anywhere.
    #[serde(default)]
    pub metrics: Option<String>,
    /// Whether the node is honest or Byzantine.
    #[serde(default)]
    pub role: RoleKind,
    /// What a Byzantine node sends; the task's usual attack if not given.
    #[serde(default)]
    pub attack: Option<AttackSpec>,
    /// The node's place in the plane: its sensor position for target localization, and where
    /// geometric edges and pictures put it.
    #[serde(default)]
    pub position: Option<[f64; 2]>,
    /// Which group of nodes shares the node's task, for reports and pictures only; nodes do
    /// not know it.
    #[serde(default)]
    pub cluster: Option<usize>,
    /// The node's shard, in the form its task reads.
    #[serde(default = "empty_table")]
    pub shard: serde_json::Value,
}

fn empty_table() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Whether a node follows the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RoleKind {
    /// Follows the protocol and the rule.
    #[default]
    Honest,
    /// Sends whatever its attack crafts.
    Byzantine,
}

/// The edges of a network: undirected, and every node is its own neighbour implicitly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Edges {
    /// Every pair of nodes.
    #[default]
    Complete,
    /// Each node with the next in the node list, the last with the first.
    Ring,
    /// Nodes within `radius` of each other in the plane, with each node's neighbourhood capped
    /// at `max_neighbours` including itself.
    ///
    /// The cap is applied symmetrically: every node ranks the nodes within the radius by
    /// distance (ties by list order) and proposes its nearest `max_neighbours - 1`; an edge
    /// exists where two nodes propose each other. No node exceeds the cap, and the graph stays
    /// undirected.
    Geometric {
        radius: f64,
        #[serde(default)]
        max_neighbours: Option<usize>,
    },
    /// The pairs given, by node id.
    List { pairs: Vec<[String; 2]> },
}

/// Everything wrong with a topology, named by the offending key or node.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("topology `{path}`: {reason}")]
    Parse { path: String, reason: String },
    /// The network has no nodes.
    #[error("topology has no nodes")]
    NoNodes,
    /// Two nodes share an id.
    #[error("node id `{0}` appears more than once")]
    DuplicateId(String),
    /// A node id is empty or has characters that do not fit a file name or a host name.
    #[error("node id `{0}` is not usable: use letters, digits, `-`, `_` and `.`")]
    BadId(String),
    /// Two nodes advertise the same address.
    #[error("nodes `{0}` and `{1}` have the same address `{2}`")]
    DuplicateAddress(String, String, String),
    /// An address is not `host:port`.
    #[error("node `{node}`: `{key}` = `{value}` is not host:port")]
    BadAddress {
        node: String,
        key: &'static str,
        value: String,
    },
    /// An edge names a node that does not exist.
    #[error("edge `{0}` - `{1}` names node `{2}`, which is not in the topology")]
    UnknownEdgeNode(String, String, String),
    /// A geometric graph needs positions.
    #[error("node `{0}` has no `position`, which geometric edges need")]
    MissingPosition(String),
    /// A number is out of its range.
    #[error("`{key}` = {value} is out of range: {expected}")]
    OutOfRange {
        key: String,
        value: String,
        expected: &'static str,
    },
    /// A node id that is not in the topology.
    #[error("node `{0}` is not in the topology")]
    UnknownNode(String),
    /// A node's attack does not fit.
    #[error("node `{node}`: {reason}")]
    Attack { node: String, reason: String },
}

/// Settings given on the command line; each one set overrides the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub rule: Option<Rule>,
    pub rounds: Option<u64>,
    pub seed: Option<u64>,
    pub step_size: Option<f64>,
    pub forgetting_factor: Option<f64>,
    pub round_deadline_ms: Option<u64>,
    pub out_dir: Option<PathBuf>,
}

/// The top-level keys the environment may override, as `BYZMTL_<KEY>` in upper case.
const ENV_KEYS: &[&str] = &[
    "name",
    "seed",
    "rounds",
    "rule",
    "step_size",
    "forgetting_factor",
    "initial_score",
    "round_deadline_ms",
    "startup_grace_ms",
    "linger_ms",
    "history",
    "max_message_bytes",
    "out_dir",
];

impl Topology {
    /// Reads a topology file, layers the `BYZMTL_*` environment and `overrides` over it, and
    /// validates the result.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, TopologyError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(path, &env, overrides)
    }

    /// [`Topology::load`] with the environment given as a map, so tests can fill it.
    pub fn load_with_env(
        path: &Path,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Self, TopologyError> {
        let parse_error = |reason: String| TopologyError::Parse {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(parse_error("no such file".into()));
        }

        // Only the known top-level keys come from the environment, so that other `BYZMTL_*`
        // variables (the node id, the log format) are not mistaken for topology keys.
        let env_source: HashMap<String, String> = ENV_KEYS
            .iter()
            .filter_map(|key| {
                let var = format!("BYZMTL_{}", key.to_uppercase());
                env.get(&var).map(|v| ((*key).to_string(), v.clone()))
            })
            .collect();

        let mut builder = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::default()
                    .source(Some(env_source.clone()))
                    .try_parsing(true),
            );
        let o = overrides;
        let set: [(&str, Option<config::Value>); 7] = [
            ("rule", o.rule.map(|r| r.name().into())),
            ("rounds", o.rounds.map(Into::into)),
            ("seed", o.seed.map(Into::into)),
            ("step_size", o.step_size.map(Into::into)),
            ("forgetting_factor", o.forgetting_factor.map(Into::into)),
            ("round_deadline_ms", o.round_deadline_ms.map(Into::into)),
            (
                "out_dir",
                o.out_dir.as_ref().map(|p| p.display().to_string().into()),
            ),
        ];
        for (key, value) in set {
            if let Some(value) = value {
                builder = builder
                    .set_override(key, value)
                    .map_err(|e| parse_error(e.to_string()))?;
            }
        }
        let topology: Topology = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| parse_error(e.to_string()))?;
        topology.validate()?;
        Ok(topology)
    }

    /// Parses and validates a topology from TOML text, with no environment or overrides.
    pub fn from_toml(text: &str) -> Result<Self, TopologyError> {
        let topology: Topology = toml::from_str(text).map_err(|e| TopologyError::Parse {
            path: "<text>".into(),
            reason: e.to_string(),
        })?;
        topology.validate()?;
        Ok(topology)
    }

    /// The topology as TOML text.
    pub fn to_toml(&self) -> Result<String, TopologyError> {
        toml::to_string(self).map_err(|e| TopologyError::Parse {
            path: "<text>".into(),
            reason: e.to_string(),
        })
    }

    /// Checks everything that deserialization does not.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let range = |key: &str, value: f64, ok: bool, expected| {
            if ok {
                Ok(())
            } else {
                Err(TopologyError::OutOfRange {
                    key: key.to_string(),
                    value: value.to_string(),
                    expected,
                })
            }
        };
        let (mu, nu, phi0) = (self.step_size, self.forgetting_factor, self.initial_score);
        range("step_size", mu, mu.is_finite() && mu > 0.0, "a number > 0")?;
        range(
            "forgetting_factor",
            nu,
            nu > 0.0 && nu <= 1.0,
            "a number in (0, 1]",
        )?;
        range(
            "initial_score",
            phi0,
            phi0.is_finite() && phi0 >= 0.0,
            "a number >= 0",
        )?;
        let rounds = self.rounds as f64;
        range("rounds", rounds, self.rounds > 0, "at least 1")?;
        let history = self.history as f64;
        range("history", history, self.history > 0, "at least 1")?;
        let deadline = self.round_deadline_ms as f64;
        range(
            "round_deadline_ms",
            deadline,
            self.round_deadline_ms > 0,
            "at least 1",
        )?;
        let batch = self.task.batch_size as f64;
        range(
            "task.batch_size",
            batch,
            self.task.batch_size > 0,
            "at least 1",
        )?;

        // Nodes: ids unique and usable, addresses well formed and unique.
        if self.nodes.is_empty() {
            return Err(TopologyError::NoNodes);
        }
        let mut ids = BTreeSet::new();
        let mut addresses: HashMap<&str, &str> = HashMap::new();
        for node in &self.nodes {
            let usable = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if node.id.is_empty() || !node.id.chars().all(usable) {
                return Err(TopologyError::BadId(node.id.clone()));
            }
            if !ids.insert(node.id.as_str()) {
                return Err(TopologyError::DuplicateId(node.id.clone()));
            }
            check_address(&node.id, "address", &node.address)?;
            if let Some(listen) = &node.listen {
                check_address(&node.id, "listen", listen)?;
            }
            if let Some(metrics) = &node.metrics {
                check_address(&node.id, "metrics", metrics)?;
            }
            if let Some(other) = addresses.insert(&node.address, &node.id) {
                return Err(TopologyError::DuplicateAddress(
                    other.to_string(),
                    node.id.clone(),
                    node.address.clone(),
                ));
            }
            if let Some(p) = node.position
                && !(p[0].is_finite() && p[1].is_finite())
            {
                return Err(TopologyError::OutOfRange {
                    key: format!("nodes.{}.position", node.id),
                    value: format!("{p:?}"),
                    expected: "finite coordinates",
                });
            }
            if let Some(attack) = &node.attack {
                attack.validate().map_err(|reason| TopologyError::Attack {
                    node: node.id.clone(),
                    reason,
                })?;
            }
        }

        // Edges: generators need what they read, lists name existing nodes.
        match &self.edges {
            Edges::List { pairs } => {
                for [a, b] in pairs {
                    for end in [a, b] {
                        if !ids.contains(end.as_str()) {
                            return Err(TopologyError::UnknownEdgeNode(
                                a.clone(),
                                b.clone(),
                                end.clone(),
                            ));
                        }
                    }
                }
            }
            Edges::Geometric {
                radius,
                max_neighbours,
            } => {
                range(
                    "edges.radius",
                    *radius,
                    radius.is_finite() && *radius > 0.0,
                    "> 0",
                )?;
                if let Some(cap) = max_neighbours {
                    let cap = *cap as f64;
                    range("edges.max_neighbours", cap, cap >= 1.0, "at least 1")?;
                }
                if let Some(node) = self.nodes.iter().find(|n| n.position.is_none()) {
                    return Err(TopologyError::MissingPosition(node.id.clone()));
                }
            }
            Edges::Complete | Edges::Ring => {}
        }
        Ok(())
    }

    /// The index of the node with id `id`.
    pub fn index_of(&self, id: &str) -> Result<usize, TopologyError> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| TopologyError::UnknownNode(id.to_string()))
    }

    /// Every node's neighbours (itself excluded), by index, ascending.
    pub fn adjacency(&self) -> Vec<Vec<usize>> {
        let n = self.nodes.len();
        let mut adj = vec![BTreeSet::new(); n];
        let mut link = |a: usize, b: usize| {
            if a != b {
                adj[a].insert(b);
                adj[b].insert(a);
            }
        };
        match &self.edges {
            Edges::Complete => {
                for a in 0..n {
                    for b in a + 1..n {
                        link(a, b);
                    }
                }
            }
            Edges::Ring => {
                for a in 0..n {
                    link(a, (a + 1) % n);
                }
            }
            Edges::List { pairs } => {
                let index: HashMap<&str, usize> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, node)| (node.id.as_str(), i))
                    .collect();
                for [a, b] in pairs {
                    if let (Some(&a), Some(&b)) = (index.get(a.as_str()), index.get(b.as_str())) {
                        link(a, b);
                    }
                }
            }
            Edges::Geometric {
                radius,
                max_neighbours,
            } => {
                let proposals = self.geometric_proposals(*radius, *max_neighbours);
                for a in 0..n {
                    for &b in &proposals[a] {
                        if proposals[b].contains(&a) {
                            link(a, b);
                        }
                    }
                }
            }
        }
        adj.into_iter().map(|s| s.into_iter().collect()).collect()
    }

    /// For each node, the nearest nodes within `radius`, at most `cap - 1` of them.
    ///
    /// Nodes are bucketed into square cells a little wider than the radius, so each node only
    /// measures the nodes in its own and the eight surrounding cells: linear in the number of
    /// nodes for a network of bounded density, where comparing all pairs would be quadratic.
    fn geometric_proposals(&self, radius: f64, cap: Option<usize>) -> Vec<BTreeSet<usize>> {
        let pos: Vec<[f64; 2]> = self
            .nodes
            .iter()
            .map(|n| n.position.unwrap_or([0.0, 0.0]))
            .collect();
        // The margin keeps two points within the radius in adjacent cells despite rounding.
        let cell_size = radius * (1.0 + 1e-6);
        // `as` saturates, so far-out coordinates share edge cells: more candidates, none lost.
        let cell = |p: [f64; 2]| {
            (
                (p[0] / cell_size).floor() as i64,
                (p[1] / cell_size).floor() as i64,
            )
        };
        let mut cells: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
        for (i, &p) in pos.iter().enumerate() {
            cells.entry(cell(p)).or_default().push(i);
        }
        let keep = cap.map_or(usize::MAX, |c| c.saturating_sub(1));
        let mut near: Vec<(f64, usize)> = Vec::new();
        (0..pos.len())
            .map(|a| {
                let (cx, cy) = cell(pos[a]);
                near.clear();
                for dx in -1..=1 {
                    for dy in -1..=1 {
                        let key = (cx.saturating_add(dx), cy.saturating_add(dy));
                        let Some(members) = cells.get(&key) else {
                            continue;
                        };
                        for &b in members {
                            let d = (pos[a][0] - pos[b][0]).hypot(pos[a][1] - pos[b][1]);
                            if b != a && d <= radius {
                                near.push((d, b));
                            }
                        }
                    }
                }
                near.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
                // Saturated cell keys can repeat a cell; a node is proposed once.
                near.dedup_by_key(|&mut (_, b)| b);
                near.iter().take(keep).map(|&(_, b)| b).collect()
            })
            .collect()
    }

    /// The undirected edges as index pairs `(a, b)` with `a < b`.
    pub fn edge_list(&self) -> Vec<(usize, usize)> {
        self.adjacency()
            .iter()
            .enumerate()
            .flat_map(|(a, ns)| ns.iter().filter(move |&&b| b > a).map(move |&b| (a, b)))
            .collect()
    }

    /// The task every node works on.
    pub fn task_kind(&self) -> TaskKind {
        self.task.kind
    }

    /// What node `index`'s task needs to set itself up.
    pub fn task_context(&self, index: usize) -> TaskContext {
        let node = &self.nodes[index];
        TaskContext {
            node_id: node.id.clone(),
            node_index: index,
            seed: crate::seed::derive(self.seed, crate::seed::Stream::Task, &[index as u64]),
            network_seed: self.seed,
            step_size: self.step_size,
            rounds: self.rounds,
            position: node.position,
            settings: self.task.clone(),
            shard: node.shard.clone(),
        }
    }

    /// The attack node `index` runs, if it is Byzantine.
    pub fn attack_of(&self, index: usize) -> Option<AttackSpec> {
        let node = &self.nodes[index];
        (node.role == RoleKind::Byzantine).then(|| {
            node.attack
                .clone()
                .unwrap_or_else(|| AttackSpec::default_for(self.task.kind))
        })
    }

    /// Indices of the honest nodes.
    pub fn honest(&self) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == RoleKind::Honest)
            .map(|(i, _)| i)
    }
}

fn check_address(node: &str, key: &'static str, value: &str) -> Result<(), TopologyError> {
    let bad = || TopologyError::BadAddress {
        node: node.to_string(),
        key,
        value: value.to_string(),
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
        name = "small"
        rounds = 5
        [[nodes]]
        id = "a"
        address = "127.0.0.1:7001"
        position = [0.0, 0.0]
        [[nodes]]
        id = "b"
        address = "127.0.0.1:7002"
        position = [0.5, 0.0]
        [[nodes]]
        id = "c"
        address = "127.0.0.1:7003"
        position = [2.0, 0.0]
    "#;

    fn err(text: &str) -> String {
        match Topology::from_toml(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_complete_graph() {
        let t = Topology::from_toml(SMALL).ok();
        let t = t.as_ref();
        assert_eq!(t.map(|t| t.rule), Some(Rule::LossFiltered));
        assert_eq!(
            t.map(|t| t.adjacency()),
            Some(vec![vec![1, 2], vec![0, 2], vec![0, 1]])
        );
    }

    #[test]
    fn geometric_graph_respects_radius_and_cap() {
        let text = format!("{SMALL}\n[edges]\nkind = \"geometric\"\nradius = 1.0\n");
        let t = Topology::from_toml(&text).ok();
        assert_eq!(
            t.map(|t| t.adjacency()),
            Some(vec![vec![1], vec![0], vec![]])
        );

        // Four nodes on a line, all within the radius, capped at 2 including self: each keeps
        // its single nearest, and only mutual choices become edges.
        let mut nodes = String::new();
        for (i, x) in [0.0, 1.0, 1.5, 3.0].iter().enumerate() {
            nodes += &format!(
                "[[nodes]]\nid = \"n{i}\"\naddress = \"h:{}\"\nposition = [{x}, 0.0]\n",
                7000 + i
            );
        }
        let text = format!(
            "rounds = 1\n[edges]\nkind = \"geometric\"\nradius = 10.0\nmax_neighbours = 2\n{nodes}"
        );
        let t = Topology::from_toml(&text).ok();
        assert_eq!(
            t.map(|t| t.adjacency()),
            Some(vec![vec![], vec![2], vec![1], vec![]])
        );
    }

    #[test]
    fn geometric_cells_find_every_pair_within_the_radius() {
        // A lattice with spacing equal to the radius puts pairs exactly at the radius and on
        // cell boundaries; jittered points and negative coordinates fill the rest.
        let radius = 0.7;
        let mut positions = Vec::new();
        for i in -4..4 {
            for j in -3..3 {
                positions.push([f64::from(i) * radius, f64::from(j) * radius]);
            }
        }
        let mut x = 0.123_f64;
        for _ in 0..150 {
            x = (x * 9301.0 + 0.49297).fract();
            let y = (x * 7.0 + 0.3).fract();
            positions.push([x * 6.0 - 3.0, y * 4.0 - 2.0]);
        }
        let mut nodes = String::new();
        for (i, [px, py]) in positions.iter().enumerate() {
            nodes += &format!(
                "[[nodes]]\nid = \"n{i}\"\naddress = \"h:{}\"\nposition = [{px:?}, {py:?}]\n",
                7000 + i
            );
        }
        for cap in ["", "max_neighbours = 5\n"] {
            let text = format!(
                "rounds = 1\n[edges]\nkind = \"geometric\"\nradius = {radius:?}\n{cap}{nodes}"
            );
            let t = match Topology::from_toml(&text) {
                Ok(t) => t,
                Err(e) => panic!("{e}"),
            };
            // All pairs, ranked by distance then index, each node keeping its nearest.
            let keep = if cap.is_empty() { usize::MAX } else { 4 };
            let proposals: Vec<BTreeSet<usize>> = (0..positions.len())
                .map(|a| {
                    let pa = positions[a];
                    let mut near: Vec<(f64, usize)> = (0..positions.len())
                        .filter(|&b| b != a)
                        .map(|b| ((pa[0] - positions[b][0]).hypot(pa[1] - positions[b][1]), b))
                        .filter(|&(d, _)| d <= radius)
                        .collect();
                    near.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
                    near.into_iter().take(keep).map(|(_, b)| b).collect()
                })
                .collect();
            let expected: Vec<Vec<usize>> = (0..positions.len())
                .map(|a| {
                    proposals[a]
                        .iter()
                        .copied()
                        .filter(|&b| proposals[b].contains(&a))
                        .collect()
                })
                .collect();
            let adjacency = t.adjacency();
            assert!(adjacency.iter().map(Vec::len).sum::<usize>() > 300);
            assert_eq!(adjacency, expected);
        }
    }

    #[test]
    fn ring_and_list() {
        let ring = format!("{SMALL}\n[edges]\nkind = \"ring\"\n");
        let t = Topology::from_toml(&ring).ok();
        assert_eq!(t.map(|t| t.edge_list()), Some(vec![(0, 1), (0, 2), (1, 2)]));
        let list = format!("{SMALL}\n[edges]\nkind = \"list\"\npairs = [[\"a\", \"c\"]]\n");
        let t = Topology::from_toml(&list).ok();
        assert_eq!(t.map(|t| t.edge_list()), Some(vec![(0, 2)]));
    }

    #[test]
    fn bad_topologies_name_the_problem() {
        let dup = SMALL.replace("id = \"b\"", "id = \"a\"");
        assert!(err(&dup).contains("`a` appears more than once"));

        let edge = format!("{SMALL}\n[edges]\nkind = \"list\"\npairs = [[\"a\", \"zz\"]]\n");
        assert!(err(&edge).contains("node `zz`"));

        let mu = SMALL.replace("rounds = 5", "rounds = 5\nstep_size = -0.1");
        assert!(err(&mu).contains("step_size"));

        let port = SMALL.replace("127.0.0.1:7002", "127.0.0.1:http");
        assert!(err(&port).contains("node `b`"));

        let typo = SMALL.replace("rounds = 5", "rounds = 5\nroudns = 3");
        assert!(err(&typo).contains("roudns"));

        let value = SMALL.replace("rounds = 5", "rounds = \"many\"");
        assert!(err(&value).contains("rounds") || err(&value).contains("integer"));

        let t = Topology::from_toml(SMALL).ok();
        let unknown = t.map(|t| t.index_of("node-7").map_err(|e| e.to_string()));
        assert_eq!(
            unknown,
            Some(Err("node `node-7` is not in the topology".into()))
        );
    }

    #[test]
    fn layers_file_environment_and_flags() {
        let dir = std::env::temp_dir().join(format!("byzmtl-topo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("net.toml");
        std::fs::write(&path, SMALL).ok();

        let env: HashMap<String, String> = [
            ("BYZMTL_RULE".to_string(), "average".to_string()),
            ("BYZMTL_ROUNDS".to_string(), "9".to_string()),
            ("BYZMTL_ID".to_string(), "a".to_string()),
        ]
        .into();
        let flags = Overrides {
            rounds: Some(11),
            ..Overrides::default()
        };
        let t = Topology::load_with_env(&path, &env, &flags).map_err(|e| e.to_string());
        assert_eq!(
            t.as_ref().map(|t| (t.rule, t.rounds)),
            Ok((Rule::Average, 11))
        );

        let bad_env: HashMap<String, String> =
            [("BYZMTL_ROUNDS".to_string(), "lots".to_string())].into();
        let t = Topology::load_with_env(&path, &bad_env, &Overrides::default());
        assert!(t.is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
