//! Tasks: the learning problems a node can work on, each with its data and its model.
//!
//! A task owns a node's shard, draws the round's batch, takes the local adaptation step, and
//! scores any model (mine or a neighbour's) on my batch. The round engine sees a task only
//! through [`Task`] and flat parameter vectors, so tasks with candle models and mini-batches fit
//! beside the two-parameter target-localization task without changing the engine or the rules.

pub mod classify;
pub mod cnn;
pub mod digits;
pub mod har;
pub mod target;

pub use target::TargetLocalization;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::params::Layout;

/// The tasks byzmtl knows, by their topology name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Estimating a target's position from noisy distance and direction (paper, appendix B.1).
    #[default]
    TargetLocalization,
    /// Human activity recognition on the UCI HAR data set layout.
    Har,
    /// Digit classification on IDX files (MNIST family).
    Digits,
}

impl TaskKind {
    /// The task's name as written in a topology.
    pub fn name(self) -> &'static str {
        match self {
            Self::TargetLocalization => "target-localization",
            Self::Har => "har",
            Self::Digits => "digits",
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Loss and, for classification, accuracy of one model on one batch.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BatchMetrics {
    /// Mean loss over the batch.
    pub loss: f64,
    /// Fraction classified correctly, for classification tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

/// Loss and accuracy on a node's held-out data.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TestMetrics {
    /// The round after which the evaluation was made.
    pub round: u64,
    /// Mean loss over the held-out data.
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
}

/// What can go wrong inside a task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The shard description in the topology is unusable.
    #[error("shard of node `{node}`: {reason}")]
    Shard { node: String, reason: String },
    /// A data file could not be read or is malformed.
    #[error("data file `{path}`: {reason}")]
    Data { path: String, reason: String },
    /// A tensor operation failed.
    #[error("model computation failed: {0}")]
    Tensor(String),
}

/// A learning problem on one node's shard.
///
/// Each round the engine calls [`Task::next_batch`] once, then [`Task::adapt`] on the node's
/// model, then [`Task::losses`] on the adapted models it received, then
/// [`Task::round_metrics`] on the combined model. Every method works on flat vectors laid out
/// by [`Task::layout`]; every vector it is given has exactly that length.
pub trait Task: Send {
    /// Which task this is.
    fn kind(&self) -> TaskKind;

    /// The model's named tensors.
    fn layout(&self) -> &Arc<Layout>;

    /// The initial model (see [`Init`]).
    fn init(&mut self) -> Vec<f32>;

    /// Draws the batch of `round`: the streaming measurement or the next mini-batch.
    fn next_batch(&mut self, round: u64) -> Result<(), TaskError>;

    /// One local step from `model` on the round's batch, written to `adapted`. Returns the
    /// metrics of `model` on the batch before the step.
    fn adapt(&mut self, model: &[f32], adapted: &mut [f32]) -> Result<BatchMetrics, TaskError>;

    /// Writes the loss of each model on the round's batch into `out` (same length as
    /// `models`). A loss may come out NaN or infinite for a wild model; the caller excludes it.
    fn losses(&mut self, models: &[&[f32]], out: &mut [f64]) -> Result<(), TaskError>;

    /// The metrics reported for the round: `adapt` holds what [`Task::adapt`] returned and
    /// `combined` is the model after combination. Streaming tasks report the combined model's
    /// loss on the round's measurement; mini-batch tasks report the training metrics.
    fn round_metrics(
        &mut self,
        adapt: BatchMetrics,
        combined: &[f32],
    ) -> Result<BatchMetrics, TaskError>;

    /// Relabels the node's examples, class `c` becoming `classes - 1 - c`, and says whether
    /// it could: only classification tasks have labels.
    fn flip_labels(&mut self) -> bool {
        false
    }

    /// Evaluates `model` on held-out data when an evaluation is due after `round`.
    fn test(&mut self, round: u64, model: &[f32]) -> Result<Option<TestMetrics>, TaskError> {
        let _ = (round, model);
        Ok(None)
    }
}

/// The optimizer of the local adaptation step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    /// Plain stochastic gradient descent with the topology's step size, as in the paper.
    #[default]
    Sgd,
    /// Adam with the topology's step size as its learning rate.
    Adam,
}

/// Task settings shared by every node of a topology (the `[task]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// Which task the network learns.
    #[serde(default)]
    pub kind: TaskKind,
    /// Mini-batch size for classification tasks.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The local optimizer.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Evaluate on held-out data every this many rounds (0: only after the last round).
    #[serde(default)]
    pub test_every: u64,
    /// Where the task's data set lives, for tasks that read files.
    #[serde(default)]
    pub data: Option<std::path::PathBuf>,
    /// Where each node's initial model comes from; by default `shared` for the classification
    /// tasks and `own` for target localization.
    #[serde(default)]
    pub init: Option<Init>,
}

/// Where a node's initial model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// Every node draws the same model from the network's seed. Neural networks need it:
    /// two independently initialised networks order their hidden units differently, so
    /// averaging them destroys what each has learned.
    Shared,
    /// Each node draws its own model from its own seed.
    Own,
}

fn default_batch_size() -> usize {
    10
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            kind: TaskKind::default(),
            batch_size: default_batch_size(),
            optimizer: Optimizer::default(),
            test_every: 0,
            data: None,
            init: None,
        }
    }
}

/// Everything a task needs to set itself up on one node.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The node's id, for error messages.
    pub node_id: String,
    /// The node's position in the topology's node list.
    pub node_index: usize,
    /// A seed for this node alone, derived from the topology's seed and the node's index.
    pub seed: u64,
    /// The topology's seed, which every node shares.
    pub network_seed: u64,
    /// Step size (learning rate) of the local step.
    pub step_size: f64,
    /// The rounds the node runs in all.
    pub rounds: u64,
    /// The node's place in the plane, where the topology gives one.
    pub position: Option<[f64; 2]>,
    /// The topology's `[task]` table.
    pub settings: TaskSettings,
    /// The node's `shard` table, in the form the task itself deserializes.
    pub shard: serde_json::Value,
}

impl TaskContext {
    /// The seed the node's initial model is drawn from, given the task's default `init`.
    pub fn init_seed(&self, default: Init) -> u64 {
        match self.settings.init.unwrap_or(default) {
            Init::Shared => crate::seed::derive(self.network_seed, crate::seed::Stream::Task, &[]),
            Init::Own => self.seed,
        }
    }
}

/// The model layout of the task a context names, without reading the node's shard where the
/// layout does not depend on it (a Byzantine node needs the shape of the models it mimics, not
/// a shard of its own).
pub fn layout(ctx: &TaskContext) -> Result<Arc<Layout>, TaskError> {
    match ctx.settings.kind {
        TaskKind::TargetLocalization => Ok(TargetLocalization::layout_of()),
        TaskKind::Har => har::HarTask::layout_of(ctx),
        TaskKind::Digits => Ok(digits::DigitsTask::layout_of()),
    }
}

/// Sets up the task a context names.
pub fn build(ctx: &TaskContext) -> Result<Box<dyn Task>, TaskError> {
    match ctx.settings.kind {
        TaskKind::TargetLocalization => Ok(Box::new(TargetLocalization::new(ctx)?)),
        TaskKind::Har => Ok(Box::new(har::HarTask::new(ctx)?)),
        TaskKind::Digits => Ok(Box::new(digits::DigitsTask::new(ctx)?)),
    }
}
