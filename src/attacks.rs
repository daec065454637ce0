//! Attacks: what a Byzantine node sends its neighbours.
//!
//! A Byzantine node takes part in every round like an honest one, but instead of its adapted
//! model it serves whatever its attack crafts. Many attacks look at the honest neighbours'
//! adapted models of the round first ([`Attacker::observe`]); the simulator hands them over
//! from its table, and the daemon gathers them with the same `GetModel` exchange honest nodes
//! use (honest nodes publish before they gather, so this never deadlocks). Crafting is then a
//! function of the topology (its seed, the victims' shards), the attacker, the round, the
//! requester and what was observed, so a network gives the same numbers in every run and in
//! every exchange.
//!
//! What a crafted answer can be is [`Crafted`]: a model, silence, a late model, or a
//! malformed message that only the wire can carry.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::params::Layout;
use crate::pb;
use crate::seed::{self, Stream};
use crate::tasks::target::TargetShard;
use crate::tasks::{self, Task, TaskContext, TaskKind};
use crate::topology::Topology;

/// An attack and its parameters, as written in a node's `attack` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AttackSpec {
    /// Every coordinate drawn uniformly from `[low, high]`, afresh each round (the paper's
    /// target-localization attack uses [15, 16]).
    Uniform { low: f64, high: f64 },
    /// Every coordinate uniform in [0, 0.1] (the paper's classification attack).
    SmallNoise,
    /// Every coordinate drawn from a normal distribution, afresh each round.
    Gaussian {
        #[serde(default)]
        mean: f64,
        #[serde(default = "default_std")]
        std: f64,
    },
    /// The all-zero model.
    Zero,
    /// Minus the mean of the honest neighbours' adapted models.
    SignFlip,
    /// `lambda` times the mean of the honest neighbours' adapted models.
    Scaled {
        #[serde(default = "default_lambda")]
        lambda: f64,
    },
    /// "A little is enough" (Baruch et al., 2019): the honest mean minus `z` times the
    /// coordinate-wise standard deviation of the honest models; `z` from the neighbourhood's
    /// size and its Byzantine count when not given.
    Alie {
        #[serde(default)]
        z: Option<f64>,
    },
    /// Inner-product manipulation (Xie et al., 2020): minus `epsilon` times the honest mean.
    Ipm {
        #[serde(default = "default_epsilon")]
        epsilon: f64,
    },
    /// A copy of one honest neighbour's adapted model (the first honest neighbour if none is
    /// named).
    Mimic {
        #[serde(default)]
        neighbour: Option<String>,
    },
    /// A different model for every requester: the honest mean plus normal noise of standard
    /// deviation `spread`, drawn per requester.
    Equivocate {
        #[serde(default = "default_spread")]
        spread: f64,
    },
    /// The paper's lemma 1 attack on the distance rule: to each victim, a model closer to the
    /// victim's previous model than the victim's own adapted model (at most `closeness` times
    /// its distance), moved at most `step` toward `goal` (every coordinate) each round.
    DistanceLure {
        #[serde(default)]
        goal: f64,
        #[serde(default = "default_step")]
        step: f64,
        #[serde(default = "default_closeness")]
        closeness: f64,
    },
    /// Omniscient, target localization only: to each victim, the model furthest from the
    /// victim's target (at most `max_distance`) whose expected loss on the victim's data is
    /// `margin` times the expected loss of the victim's own adapted model.
    FilterEvasion {
        #[serde(default = "default_margin")]
        margin: f64,
        #[serde(default = "default_max_distance")]
        max_distance: f64,
    },
    /// A good neighbour (mimic) for `warmup` rounds, then bursts of `on` rounds of sign-flip
    /// separated by `off` rounds of mimic.
    OnOff {
        #[serde(default = "default_warmup")]
        warmup: u64,
        #[serde(default = "default_on")]
        on: u64,
        #[serde(default = "default_off")]
        off: u64,
    },
    /// Sends the honest mean until `from_round`, then never answers again.
    Crash {
        #[serde(default)]
        from_round: u64,
    },
    /// Sends the honest mean, `delay_ms` late.
    Straggle {
        #[serde(default = "default_delay_ms")]
        delay_ms: u64,
    },
    /// Sends a message that fails validation: NaN or infinite values, wrong shapes, or more
    /// bytes than the size limit. One `form`, or all of them in turn, round by round.
    Malformed {
        #[serde(default)]
        form: Option<Malformation>,
    },
    /// The honest mean of `lag` rounds ago (of round 0 before that).
    Replay {
        #[serde(default = "default_lag")]
        lag: u64,
    },
    /// Classification tasks only: trains by itself, honestly, on its own shard with every
    /// label flipped (class `c` becomes `classes - 1 - c`), and sends its adapted model.
    LabelFlip,
}

fn default_std() -> f64 {
    10.0
}
fn default_lambda() -> f64 {
    5.0
}
fn default_epsilon() -> f64 {
    0.5
}
fn default_spread() -> f64 {
    1.0
}
fn default_step() -> f64 {
    0.05
}
fn default_closeness() -> f64 {
    0.5
}
fn default_margin() -> f64 {
    0.9
}
fn default_max_distance() -> f64 {
    10.0
}
fn default_warmup() -> u64 {
    100
}
fn default_on() -> u64 {
    10
}
fn default_off() -> u64 {
    40
}
fn default_delay_ms() -> u64 {
    2000
}
fn default_lag() -> u64 {
    50
}

/// A way for a message to be malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Malformation {
    /// Every value NaN.
    Nan,
    /// Every value infinite.
    Infinite,
    /// One tensor too many, with a shape of its own.
    WrongShape,
    /// More bytes than a node accepts.
    Oversized,
}

impl Malformation {
    /// Every form, in the order `malformed` cycles through them.
    pub const ALL: [Malformation; 4] = [
        Malformation::Nan,
        Malformation::Infinite,
        Malformation::WrongShape,
        Malformation::Oversized,
    ];

    /// The message's tensors for a model of `layout`, larger than `limit` bytes if oversized.
    pub fn to_wire(self, layout: &Layout, limit: usize) -> Vec<pb::Tensor> {
        let len = layout.len();
        match self {
            Self::Nan => layout.to_wire(&vec![f32::NAN; len]),
            Self::Infinite => layout.to_wire(&vec![f32::INFINITY; len]),
            Self::WrongShape => {
                let mut tensors = layout.to_wire(&vec![1.0; len]);
                tensors.push(pb::Tensor {
                    name: "extra".into(),
                    shape: vec![3],
                    data: vec![0; 12],
                });
                tensors
            }
            Self::Oversized => vec![pb::Tensor {
                name: "oversized".into(),
                shape: vec![(limit / 4 + 1024) as u64],
                data: vec![0; limit + 4096],
            }],
        }
    }
}

/// The known attack names, for `byzmtl compare --attacks` and error messages.
pub const NAMES: [&str; 20] = [
    "uniform",
    "small-noise",
    "gaussian",
    "zero",
    "sign-flip",
    "scaled",
    "alie",
    "ipm",
    "mimic",
    "equivocate",
    "distance-lure",
    "filter-evasion",
    "on-off",
    "crash",
    "straggle",
    "malformed",
    "replay",
    "label-flip",
    // Names accepted for the paper's attack on either kind of task.
    "paper",
    "default",
];

impl AttackSpec {
    /// The paper's attack for a task: uniform [15, 16] for target localization, small noise
    /// for the classification tasks.
    pub fn default_for(task: TaskKind) -> Self {
        match task {
            TaskKind::TargetLocalization => Self::Uniform {
                low: 15.0,
                high: 16.0,
            },
            TaskKind::Har | TaskKind::Digits => Self::SmallNoise,
        }
    }

    /// The attack called `name` with its default parameters, for a network on `task`.
    /// `paper` (or `default`) is the task's usual attack.
    pub fn named(name: &str, task: TaskKind) -> Result<Self, String> {
        let table = match name {
            "paper" | "default" => return Ok(Self::default_for(task)),
            "uniform" => "kind = \"uniform\"\nlow = 15.0\nhigh = 16.0".to_string(),
            other => format!("kind = \"{other}\""),
        };
        toml::from_str(&table).map_err(|_| {
            format!(
                "unknown attack `{name}` (expected one of {})",
                NAMES.join(", ")
            )
        })
    }

    /// The attack's name, as written in a topology.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Uniform { .. } => "uniform",
            Self::SmallNoise => "small-noise",
            Self::Gaussian { .. } => "gaussian",
            Self::Zero => "zero",
            Self::SignFlip => "sign-flip",
            Self::Scaled { .. } => "scaled",
            Self::Alie { .. } => "alie",
            Self::Ipm { .. } => "ipm",
            Self::Mimic { .. } => "mimic",
            Self::Equivocate { .. } => "equivocate",
            Self::DistanceLure { .. } => "distance-lure",
            Self::FilterEvasion { .. } => "filter-evasion",
            Self::OnOff { .. } => "on-off",
            Self::Crash { .. } => "crash",
            Self::Straggle { .. } => "straggle",
            Self::Malformed { .. } => "malformed",
            Self::Replay { .. } => "replay",
            Self::LabelFlip => "label-flip",
        }
    }

    /// Checks the parameters; the error names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |name: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!(
                    "{} attack needs a finite `{name}`, got {v}",
                    self.name()
                ))
            }
        };
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{} attack needs `{name}` > 0, got {v}",
                    self.name()
                ))
            }
        };
        match *self {
            Self::Uniform { low, high } => {
                if low.is_finite() && high.is_finite() && low <= high {
                    Ok(())
                } else {
                    Err(format!(
                        "uniform attack needs finite low <= high, got [{low}, {high}]"
                    ))
                }
            }
            Self::Gaussian { mean, std } => {
                finite("mean", mean)?;
                if std.is_finite() && std >= 0.0 {
                    Ok(())
                } else {
                    Err(format!("gaussian attack needs `std` >= 0, got {std}"))
                }
            }
            Self::Scaled { lambda } => finite("lambda", lambda),
            Self::Alie { z } => z.map_or(Ok(()), |z| finite("z", z)),
            Self::Ipm { epsilon } => finite("epsilon", epsilon),
            Self::Equivocate { spread } => positive("spread", spread),
            Self::DistanceLure {
                goal,
                step,
                closeness,
            } => {
                finite("goal", goal)?;
                positive("step", step)?;
                if closeness > 0.0 && closeness < 1.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "distance-lure attack needs 0 < `closeness` < 1, got {closeness}"
                    ))
                }
            }
            Self::FilterEvasion {
                margin,
                max_distance,
            } => {
                positive("margin", margin)?;
                positive("max_distance", max_distance)
            }
            Self::OnOff { on: 0, .. } => Err("on-off attack needs `on` >= 1 round".to_string()),
            Self::SmallNoise
            | Self::Zero
            | Self::SignFlip
            | Self::Mimic { .. }
            | Self::OnOff { .. }
            | Self::Crash { .. }
            | Self::Straggle { .. }
            | Self::Malformed { .. }
            | Self::Replay { .. }
            | Self::LabelFlip => Ok(()),
        }
    }

    /// Whether the attack looks at the honest neighbours' adapted models before crafting.
    pub fn observes(&self) -> bool {
        !matches!(
            self,
            Self::Uniform { .. }
                | Self::SmallNoise
                | Self::Gaussian { .. }
                | Self::Zero
                | Self::Malformed { .. }
                | Self::LabelFlip
        )
    }

    /// Whether the attack answers each requester with a different model.
    pub fn per_requester(&self) -> bool {
        matches!(
            self,
            Self::Equivocate { .. } | Self::DistanceLure { .. } | Self::FilterEvasion { .. }
        )
    }
}

/// An attack that does not fit the network it is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttackError {
    /// `mimic` names a node that is not an honest neighbour.
    #[error("node `{node}`: mimic attack names `{neighbour}`, which is not an honest neighbour")]
    NotAnHonestNeighbour { node: String, neighbour: String },
    /// The attack needs a task it does not have.
    #[error("node `{node}`: {attack} attack works only on {needs}")]
    WrongTask {
        node: String,
        attack: &'static str,
        needs: &'static str,
    },
    /// The attack trains on a shard of its own, which could not be set up.
    #[error("node `{node}`: {attack} attack cannot set up its own task: {reason}")]
    OwnTask {
        node: String,
        attack: &'static str,
        reason: String,
    },
    /// A victim's task could not be read.
    #[error("node `{node}`: cannot read a victim's task: {reason}")]
    Victim { node: String, reason: String },
}

/// What a Byzantine node answers one request with.
#[derive(Debug, Clone, PartialEq)]
pub enum Crafted {
    /// A well-formed model.
    Model(Vec<f32>),
    /// No answer at all: the requester's deadline passes.
    Silent,
    /// A well-formed model, sent `after` the request.
    Delayed { after: Duration, model: Vec<f32> },
    /// A message that fails validation.
    Malformed(Malformation),
}

impl Crafted {
    /// What the requester receives in the simulator, whose rounds have `deadline`: the model
    /// if a real node would have accepted it in time, `None` otherwise.
    pub fn received(&self, deadline: Duration) -> Option<&[f32]> {
        match self {
            Self::Model(m) => Some(m),
            Self::Delayed { after, model } if *after < deadline => Some(model),
            Self::Delayed { .. } | Self::Silent | Self::Malformed(_) => None,
        }
    }
}

/// What an omniscient attack knows of one victim.
struct Victim {
    /// The victim's shard and position, for target localization.
    shard: Option<(TargetShard, [f64; 2])>,
    /// A replica of the victim's task, to reproduce its measurements, and the next round it
    /// has not drawn yet.
    replica: Option<(Box<dyn Task>, u64)>,
    ctx: TaskContext,
}

/// The honest neighbours' adapted models of one round, by node index.
type Observation = (u64, Vec<(usize, Vec<f32>)>);

/// A Byzantine node's attack, ready to craft models of a given length.
pub struct Attacker {
    spec: AttackSpec,
    seed: u64,
    node_index: usize,
    len: usize,
    /// Node index of each neighbour id, for requesters.
    neighbours: HashMap<String, usize>,
    /// Honest neighbours, in topology order.
    honest: Vec<usize>,
    /// The node `mimic` and `on-off` copy.
    mimicked: Option<usize>,
    /// `z` of `alie`.
    z: f64,
    step_size: f64,
    /// The size limit of the network's messages.
    limit: usize,
    victims: HashMap<usize, Victim>,
    /// The latest observations, oldest first, and round 0's (for `replay`).
    history: VecDeque<Observation>,
    first: Option<Observation>,
    /// The attacker's own learning, for `label-flip`.
    trainer: Option<Trainer>,
}

/// A Byzantine node's own training on poisoned data: alone, one local step a round.
struct Trainer {
    task: Box<dyn Task>,
    model: Vec<f32>,
    adapted: Vec<f32>,
    /// The first round not trained yet.
    next_round: u64,
    /// The latest rounds' models, oldest first, for requesters a round or two behind.
    recent: VecDeque<(u64, Vec<f32>)>,
}

impl Trainer {
    /// How many past rounds' models a trainer keeps.
    const KEEP: usize = 8;

    fn new(topology: &Topology, index: usize, spec: &AttackSpec) -> Result<Self, AttackError> {
        let node = topology.nodes[index].id.clone();
        let wrong_task = |node: String| AttackError::WrongTask {
            node,
            attack: spec.name(),
            needs: "classification tasks",
        };
        // Checked before building, so that a missing shard is not what the error is about.
        if topology.task_kind() == TaskKind::TargetLocalization {
            return Err(wrong_task(node));
        }
        let mut task =
            tasks::build(&topology.task_context(index)).map_err(|e| AttackError::OwnTask {
                node: node.clone(),
                attack: spec.name(),
                reason: e.to_string(),
            })?;
        if !task.flip_labels() {
            return Err(wrong_task(node));
        }
        let model = task.init();
        Ok(Self {
            adapted: model.clone(),
            model,
            task,
            next_round: 0,
            recent: VecDeque::new(),
        })
    }

    /// The adapted model of `round`, training up to it first; `None` if the task failed or
    /// the round is too old to be kept.
    fn model_of(&mut self, round: u64) -> Option<Vec<f32>> {
        while self.next_round <= round {
            let r = self.next_round;
            if let Err(e) = self.task.next_batch(r) {
                tracing::warn!(round = r, error = %e, "label-flip training failed");
                return None;
            }
            if let Err(e) = self.task.adapt(&self.model, &mut self.adapted) {
                tracing::warn!(round = r, error = %e, "label-flip training failed");
                return None;
            }
            std::mem::swap(&mut self.model, &mut self.adapted);
            self.recent.push_back((r, self.model.clone()));
            while self.recent.len() > Self::KEEP {
                self.recent.pop_front();
            }
            self.next_round += 1;
        }
        self.recent
            .iter()
            .find(|(r, _)| *r == round)
            .map(|(_, m)| m.clone())
    }
}

impl std::fmt::Debug for Attacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attacker")
            .field("spec", &self.spec)
            .field("node_index", &self.node_index)
            .finish_non_exhaustive()
    }
}

impl Attacker {
    /// An attacker for node `node_index` under the topology seed `seed`, crafting models of
    /// `len` parameters, that knows nothing of the network: attacks that observe or need a
    /// victim's task send nothing. [`Attacker::for_node`] is the full attacker.
    pub fn new(spec: AttackSpec, seed: u64, node_index: usize, len: usize) -> Self {
        Self {
            spec,
            seed,
            node_index,
            len,
            neighbours: HashMap::new(),
            honest: Vec::new(),
            mimicked: None,
            z: 1.0,
            step_size: 0.1,
            limit: 16 << 20,
            victims: HashMap::new(),
            history: VecDeque::new(),
            first: None,
            trainer: None,
        }
    }

    /// The attacker of Byzantine node `index` of `topology`, crafting models of `len`
    /// parameters.
    ///
    /// `adjacency` is the topology's [`Topology::adjacency`], computed once by the caller.
    pub fn for_node(
        topology: &Topology,
        adjacency: &[Vec<usize>],
        index: usize,
        spec: AttackSpec,
        len: usize,
    ) -> Result<Self, AttackError> {
        let node = topology.nodes[index].id.clone();
        let mine = &adjacency[index];
        let byzantine = |k: usize| topology.nodes[k].role == crate::topology::RoleKind::Byzantine;
        let honest: Vec<usize> = mine.iter().copied().filter(|&l| !byzantine(l)).collect();
        let mut attacker = Self::new(spec.clone(), topology.seed, index, len);
        attacker.neighbours = mine
            .iter()
            .map(|&l| (topology.nodes[l].id.clone(), l))
            .collect();
        attacker.step_size = topology.step_size;
        attacker.limit = topology.max_message_bytes;

        // Mimic: the named honest neighbour, or the first one.
        attacker.mimicked = match &spec {
            AttackSpec::Mimic {
                neighbour: Some(name),
            } => {
                let found = honest
                    .iter()
                    .copied()
                    .find(|&l| topology.nodes[l].id == *name);
                Some(found.ok_or_else(|| AttackError::NotAnHonestNeighbour {
                    node: node.clone(),
                    neighbour: name.clone(),
                })?)
            }
            _ => honest.first().copied(),
        };

        // ALIE's z (Baruch et al.): n nodes of which f Byzantine need s = n/2 + 1 - f honest
        // supporters, and z is the normal quantile of (n - s) / n.
        let n = mine.len() + 1;
        let f = mine.iter().filter(|&&l| byzantine(l)).count() + 1;
        let s = (n / 2 + 1).saturating_sub(f);
        attacker.z = match spec {
            AttackSpec::Alie { z: Some(z) } => z,
            _ => normal_quantile(((n - s) as f64 / n as f64).clamp(0.5, 0.999)),
        };

        // Omniscient attacks know their victims' tasks.
        let omniscient = matches!(
            spec,
            AttackSpec::DistanceLure { .. } | AttackSpec::FilterEvasion { .. }
        );
        let target = topology.task_kind() == TaskKind::TargetLocalization;
        if matches!(spec, AttackSpec::FilterEvasion { .. }) && !target {
            return Err(AttackError::WrongTask {
                node,
                attack: spec.name(),
                needs: "target localization",
            });
        }
        if omniscient && target {
            for &k in &honest {
                let ctx = topology.task_context(k);
                let bad = |e: String| AttackError::Victim {
                    node: node.clone(),
                    reason: e,
                };
                let shard: TargetShard =
                    serde_json::from_value(ctx.shard.clone()).map_err(|e| bad(e.to_string()))?;
                let position = ctx.position.unwrap_or([0.0, 0.0]);
                let victim = Victim {
                    shard: Some((shard, position)),
                    replica: None,
                    ctx,
                };
                attacker.victims.insert(k, victim);
            }
        }
        if matches!(spec, AttackSpec::LabelFlip) {
            attacker.trainer = Some(Trainer::new(topology, index, &spec)?);
        }
        attacker.honest = honest;
        Ok(attacker)
    }

    /// The attack.
    pub fn spec(&self) -> &AttackSpec {
        &self.spec
    }

    /// Whether the attack answers each requester with a different model.
    pub fn per_requester(&self) -> bool {
        self.spec.per_requester()
    }

    /// Whether the attack looks at the honest neighbours' models before crafting.
    pub fn observes(&self) -> bool {
        self.spec.observes()
    }

    /// Whether crafting may train a model, which takes long enough to keep off an async
    /// runtime's worker threads.
    pub fn trains(&self) -> bool {
        self.trainer.is_some()
    }

    /// The length of the models the attack crafts.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the models are empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size limit of the network's messages, which `oversized` exceeds.
    pub fn message_limit(&self) -> usize {
        self.limit
    }

    /// The honest neighbours whose models the attack observes, in topology order.
    pub fn honest_neighbours(&self) -> &[usize] {
        &self.honest
    }

    /// Records the honest neighbours' adapted models of `round` (by node index; a neighbour
    /// whose model did not arrive is left out).
    pub fn observe(&mut self, round: u64, models: Vec<(usize, Vec<f32>)>) {
        if self.first.is_none() {
            self.first = Some((round, models.clone()));
        }
        let keep = match self.spec {
            AttackSpec::Replay { lag } => lag as usize + 1,
            _ => 1,
        };
        self.history.push_back((round, models));
        while self.history.len() > keep {
            self.history.pop_front();
        }
    }

    fn observed(&self, round: u64) -> Option<&[(usize, Vec<f32>)]> {
        self.history
            .iter()
            .rev()
            .find(|(r, _)| *r == round)
            .map(|(_, m)| m.as_slice())
    }

    /// The mean of the honest models observed in `round`, if any were.
    fn honest_mean(&self, round: u64) -> Option<Vec<f32>> {
        mean(self.observed(round)?)
    }

    /// The answer to `requester` (a node id) for `round`.
    pub fn craft(&mut self, round: u64, requester: &str) -> Crafted {
        let model = |m: Option<Vec<f32>>| m.map_or(Crafted::Silent, Crafted::Model);
        match self.spec.clone() {
            AttackSpec::Uniform { low, high } => Crafted::Model(self.uniform(round, low, high)),
            AttackSpec::SmallNoise => Crafted::Model(self.uniform(round, 0.0, 0.1)),
            AttackSpec::Gaussian { mean, std } => {
                let mut rng =
                    seed::rng(self.seed, Stream::Attack, &[self.node_index as u64, round]);
                let normal = Normal::new(mean, std).ok();
                Crafted::Model(
                    (0..self.len)
                        .map(|_| normal.map_or(mean, |n| n.sample(&mut rng)) as f32)
                        .collect(),
                )
            }
            AttackSpec::Zero => Crafted::Model(vec![0.0; self.len]),
            AttackSpec::SignFlip => model(self.scaled_mean(round, -1.0)),
            AttackSpec::Scaled { lambda } => model(self.scaled_mean(round, lambda)),
            AttackSpec::Ipm { epsilon } => model(self.scaled_mean(round, -epsilon)),
            AttackSpec::Alie { .. } => model(self.alie(round)),
            AttackSpec::Mimic { .. } => model(self.mimic(round)),
            AttackSpec::Equivocate { spread } => model(self.honest_mean(round).map(|mut m| {
                let who = seed::hash_str(requester);
                let mut rng = seed::rng(
                    self.seed,
                    Stream::Attack,
                    &[self.node_index as u64, round, who],
                );
                let normal = Normal::new(0.0, spread).ok();
                for v in &mut m {
                    *v += normal.map_or(0.0, |n| n.sample(&mut rng)) as f32;
                }
                m
            })),
            AttackSpec::DistanceLure {
                goal,
                step,
                closeness,
            } => model(self.lure(round, requester, goal, step, closeness)),
            AttackSpec::FilterEvasion {
                margin,
                max_distance,
            } => model(self.evade(round, requester, margin, max_distance)),
            AttackSpec::OnOff { warmup, on, off } => {
                let bad = round >= warmup && (round - warmup) % (on + off) < on;
                if bad {
                    model(self.scaled_mean(round, -1.0))
                } else {
                    model(self.mimic(round))
                }
            }
            AttackSpec::Crash { from_round } => {
                if round >= from_round {
                    Crafted::Silent
                } else {
                    model(self.honest_mean(round))
                }
            }
            AttackSpec::Straggle { delay_ms } => match self.honest_mean(round) {
                Some(m) => Crafted::Delayed {
                    after: Duration::from_millis(delay_ms),
                    model: m,
                },
                None => Crafted::Silent,
            },
            AttackSpec::Malformed { form } => {
                Crafted::Malformed(form.unwrap_or(
                    Malformation::ALL[(round % Malformation::ALL.len() as u64) as usize],
                ))
            }
            AttackSpec::Replay { lag } => {
                let old = round.saturating_sub(lag);
                let seen = self
                    .history
                    .iter()
                    .find(|(r, _)| *r == old)
                    .or(self.first.as_ref().filter(|_| round < lag));
                model(seen.and_then(|(_, m)| mean(m)))
            }
            AttackSpec::LabelFlip => model(self.trainer.as_mut().and_then(|t| t.model_of(round))),
        }
    }

    fn uniform(&self, round: u64, low: f64, high: f64) -> Vec<f32> {
        let mut rng = seed::rng(self.seed, Stream::Attack, &[self.node_index as u64, round]);
        (0..self.len)
            .map(|_| rng.random_range(low..=high) as f32)
            .collect()
    }

    fn scaled_mean(&self, round: u64, factor: f64) -> Option<Vec<f32>> {
        let mut m = self.honest_mean(round)?;
        m.iter_mut()
            .for_each(|v| *v = (f64::from(*v) * factor) as f32);
        Some(m)
    }

    fn alie(&self, round: u64) -> Option<Vec<f32>> {
        let models = self.observed(round)?;
        let mut m = mean(models)?;
        let n = models.len() as f64;
        for (j, v) in m.iter_mut().enumerate() {
            let mu = f64::from(*v);
            let var = models
                .iter()
                .map(|(_, x)| (f64::from(x[j]) - mu).powi(2))
                .sum::<f64>()
                / n;
            *v = (mu - self.z * var.sqrt()) as f32;
        }
        Some(m)
    }

    fn mimic(&self, round: u64) -> Option<Vec<f32>> {
        let target = self.mimicked?;
        let models = self.observed(round)?;
        models
            .iter()
            .find(|(l, _)| *l == target)
            .or(models.first())
            .map(|(_, m)| m.clone())
    }

    /// The victim's adapted model of `round`, as observed.
    fn victim_model(&self, round: u64, victim: usize) -> Option<Vec<f32>> {
        let models = self.observed(round)?;
        models
            .iter()
            .find(|(l, _)| *l == victim)
            .map(|(_, m)| m.clone())
    }

    /// Lemma 1's lure. The victim's previous model follows from its adapted model: for target
    /// localization, a replica of the victim's task reproduces its measurement `q`, and
    /// `adapted = (1 - mu) previous + mu q` is inverted; for other tasks the adapted model
    /// stands in for the previous one, which makes the lure weaker.
    fn lure(
        &mut self,
        round: u64,
        requester: &str,
        goal: f64,
        step: f64,
        closeness: f64,
    ) -> Option<Vec<f32>> {
        let victim = *self.neighbours.get(requester)?;
        let adapted = self.victim_model(round, victim)?;
        let previous = match self.replica_step(victim, round) {
            Some(pulled) => {
                let mu = self.step_size;
                adapted
                    .iter()
                    .zip(&pulled)
                    .map(|(&a, &p)| (f64::from(a) - f64::from(p)) / (1.0 - mu))
                    .collect::<Vec<f64>>()
            }
            None => adapted.iter().map(|&v| f64::from(v)).collect(),
        };

        // Move from the previous model toward the goal by less than the victim's own step.
        let own: f64 = previous
            .iter()
            .zip(&adapted)
            .map(|(p, &a)| (f64::from(a) - p).powi(2))
            .sum::<f64>()
            .sqrt();
        let to_goal: f64 = previous
            .iter()
            .map(|p| (goal - p).powi(2))
            .sum::<f64>()
            .sqrt();
        let shift = step.min(closeness * own).min(to_goal);
        let scale = if to_goal > 0.0 { shift / to_goal } else { 0.0 };
        Some(
            previous
                .iter()
                .map(|p| (p + scale * (goal - p)) as f32)
                .collect(),
        )
    }

    /// For target localization: the victim's local step from the zero model in `round`,
    /// `mu q`, from a replica of its task advanced to that round.
    fn replica_step(&mut self, victim: usize, round: u64) -> Option<Vec<f32>> {
        let len = self.len;
        let entry = self.victims.get_mut(&victim)?;
        let stale = entry.replica.as_ref().is_none_or(|(_, next)| *next > round);
        if stale {
            let mut task = tasks::build(&entry.ctx).ok()?;
            task.init();
            entry.replica = Some((task, 0));
        }
        let (task, next) = entry.replica.as_mut()?;
        while *next <= round {
            task.next_batch(*next).ok()?;
            *next += 1;
        }
        let mut pulled = vec![0.0f32; len];
        task.adapt(&vec![0.0; len], &mut pulled).ok()?;
        Some(pulled)
    }

    /// The filter-evading model: on the victim's target, pushed across its measurement
    /// direction, where the loss barely sees it. With measurement `d = (t - x).u + n_d` and
    /// direction `u = u0 + n_u`, a model `m` has expected loss
    /// `((t - m).u0)^2 + s_u^2 |t - m|^2 + s_d^2`; at `m = t + b v` with `v` across `u0` that
    /// is `s_u^2 b^2 + s_d^2`.
    fn evade(
        &self,
        round: u64,
        requester: &str,
        margin: f64,
        max_distance: f64,
    ) -> Option<Vec<f32>> {
        let victim = *self.neighbours.get(requester)?;
        let (shard, x) = self.victims.get(&victim)?.shard.as_ref()?;
        let adapted = self.victim_model(round, victim)?;
        let t = shard.target;
        let (sd, su) = (shard.distance_noise, shard.direction_noise);
        let norm = (t[0] - x[0]).hypot(t[1] - x[1]);
        let u0 = [(t[0] - x[0]) / norm, (t[1] - x[1]) / norm];
        let v0 = [-u0[1], u0[0]];
        let expected = |m: [f64; 2]| {
            let e = [t[0] - m[0], t[1] - m[1]];
            let along = e[0] * u0[0] + e[1] * u0[1];
            along * along + su * su * (e[0] * e[0] + e[1] * e[1]) + sd * sd
        };
        let own = expected([f64::from(adapted[0]), f64::from(adapted[1])]);
        let room = (margin * own - sd * sd).max(0.0);
        let b = if su > 0.0 {
            (room.sqrt() / su).min(max_distance)
        } else {
            max_distance
        };
        Some(vec![(t[0] + b * v0[0]) as f32, (t[1] + b * v0[1]) as f32])
    }
}

/// The coordinate-wise mean of some models, `None` if there are none.
fn mean(models: &[(usize, Vec<f32>)]) -> Option<Vec<f32>> {
    let (_, first) = models.first()?;
    let mut sum = vec![0.0f64; first.len()];
    for (_, m) in models {
        for (s, &v) in sum.iter_mut().zip(m) {
            *s += f64::from(v);
        }
    }
    let n = models.len() as f64;
    Some(sum.into_iter().map(|s| (s / n) as f32).collect())
}

/// The standard normal quantile of `p` in (0, 1), by bisection on the distribution function
/// (Abramowitz and Stegun 7.1.26 for erf, error below 1.5e-7).
pub fn normal_quantile(p: f64) -> f64 {
    let erf = |x: f64| {
        let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
        let y = 1.0
            - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736)
                * t
                + 0.254_829_592)
                * t
                * (-x * x).exp();
        y.copysign(x)
    };
    let cdf = |x: f64| 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// An attacker shared between the requests a node's server handles at once.
pub type SharedAttacker = Arc<std::sync::Mutex<Attacker>>;

/// Sets up node `index`'s attacker, if the node is Byzantine, as the simulator and the daemon
/// both do.
pub fn attacker_of(
    topology: &Topology,
    index: usize,
    len: usize,
) -> Result<Option<Attacker>, AttackError> {
    topology
        .attack_of(index)
        .map(|spec| Attacker::for_node(topology, &topology.adjacency(), index, spec, len))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_stays_in_range_and_repeats() {
        let spec = AttackSpec::Uniform {
            low: 15.0,
            high: 16.0,
        };
        let mut a = Attacker::new(spec, 3, 7, 1000);
        let Crafted::Model(m) = a.craft(4, "x") else {
            panic!("uniform sends a model")
        };
        assert!(m.iter().all(|&v| (15.0..=16.0).contains(&v)));
        assert_eq!(Crafted::Model(m.clone()), a.craft(4, "y"));
        assert_ne!(Crafted::Model(m.clone()), a.craft(5, "x"));
        let mean = m.iter().map(|&v| f64::from(v)).sum::<f64>() / 1000.0;
        assert!((mean - 15.5).abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn rejects_inverted_range() {
        let spec = AttackSpec::Uniform {
            low: 2.0,
            high: 1.0,
        };
        assert!(spec.validate().is_err());
    }

    // Quantiles of the standard normal from tables: 0.5 -> 0, 0.6 -> 0.2533, 0.975 -> 1.96.
    #[test]
    fn normal_quantiles() {
        assert!(normal_quantile(0.5).abs() < 1e-6);
        assert!((normal_quantile(0.6) - 0.2533).abs() < 1e-3);
        assert!((normal_quantile(0.975) - 1.96).abs() < 1e-3);
    }

    // Honest models (1, 2) and (3, 6): mean (2, 4), population std (1, 2). With z = 1 ALIE
    // sends (1, 2); sign-flip (-2, -4); scaled by 2 (4, 8); ipm with epsilon 0.5 (-1, -2).
    #[test]
    fn statistics_of_the_honest_models() {
        let seen = || vec![(0, vec![1.0, 2.0]), (1, vec![3.0, 6.0])];
        let craft = |spec: AttackSpec| {
            let mut a = Attacker::new(spec, 1, 2, 2);
            a.z = 1.0;
            a.observe(0, seen());
            a.craft(0, "x")
        };
        let model = |v: &[f32]| Crafted::Model(v.to_vec());
        assert_eq!(craft(AttackSpec::Alie { z: Some(1.0) }), model(&[1.0, 2.0]));
        assert_eq!(craft(AttackSpec::SignFlip), model(&[-2.0, -4.0]));
        assert_eq!(
            craft(AttackSpec::Scaled { lambda: 2.0 }),
            model(&[4.0, 8.0])
        );
        assert_eq!(
            craft(AttackSpec::Ipm { epsilon: 0.5 }),
            model(&[-1.0, -2.0])
        );
        assert_eq!(craft(AttackSpec::Zero), model(&[0.0, 0.0]));
    }

    #[test]
    fn parses_names_with_defaults() {
        for name in NAMES {
            let spec = AttackSpec::named(name, TaskKind::TargetLocalization);
            assert!(spec.is_ok(), "{name}: {spec:?}");
        }
        assert!(AttackSpec::named("median", TaskKind::Har).is_err());
    }
}
