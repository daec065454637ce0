//! What the two classification tasks (`har`, `digits`) share: labelled examples held in memory,
//! the round's mini-batch, softmax cross-entropy, the local optimizer and held-out evaluation.
//!
//! A task supplies a [`Model`]: its layout, its initial values and a candle forward pass from
//! parameter tensors to logits. A [`Classifier`] does the rest on flat parameter vectors: it
//! draws mini-batches from the node's training part, takes the local step with SGD or Adam, scores
//! any model on the round's batch, and evaluates on the node's held-out part.
//!
//! Parameters enter candle once per model and round, one tensor per layout entry built from its
//! slice of the flat vector. The loss and its gradient with respect to the logits are computed
//! here in f64; candle back-propagates that gradient through the model, and the optimizer works
//! on the flat vectors again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var};
use rand::Rng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

use rayon::prelude::*;

use super::{BatchMetrics, Init, Optimizer, TaskContext, TaskError, TestMetrics};
use crate::params::Layout;
use crate::seed::{self, Stream};

/// How many held-out examples go through the model at once during evaluation.
const TEST_CHUNK: usize = 128;

/// Coordinate of the initial model's random stream under [`Stream::Task`].
pub const INIT_STREAM: u64 = 1;

/// Coordinate of the batch order's random stream under [`Stream::Task`].
pub const BATCH_STREAM: u64 = 2;

/// Coordinate of the stream that picks the node's share of the data (split or draw).
pub const SHARD_STREAM: u64 = 3;

/// Adam's constants, as in PyTorch's defaults.
const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f32 = 1e-8;

/// Labelled examples, one row of `dim` features each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Examples {
    /// The features, row after row.
    pub features: Vec<f32>,
    /// The class of each row, from 0.
    pub labels: Vec<u32>,
    /// The number of features in a row.
    pub dim: usize,
}

impl Examples {
    /// No examples yet, with rows of `dim` features.
    pub fn new(dim: usize) -> Self {
        Self {
            features: Vec::new(),
            labels: Vec::new(),
            dim,
        }
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The features of example `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// Appends one example.
    pub fn push(&mut self, row: &[f32], label: u32) {
        debug_assert_eq!(row.len(), self.dim);
        self.features.extend_from_slice(row);
        self.labels.push(label);
    }

    /// The features and labels of the examples at `indices`, in that order.
    fn gather(&self, indices: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let mut features = Vec::with_capacity(indices.len() * self.dim);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
        }
        (features, labels)
    }
}

/// A classifier's architecture, as the [`Classifier`] sees it.
pub trait Model: Send + Sync {
    /// The named tensors of the flat parameter vector.
    fn layout(&self) -> &Arc<Layout>;

    /// The number of classes, which is the number of logits per example.
    fn classes(&self) -> usize;

    /// Initial parameter values drawn from `rng`.
    fn init(&self, rng: &mut SmallRng) -> Vec<f32>;

    /// The model's input for `rows` examples whose features are laid out row after row. It is
    /// built once per batch and shared by every model scored on that batch.
    fn input(&self, features: Vec<f32>, rows: usize) -> candle_core::Result<Tensor>;

    /// The logits, `[rows, classes]`, of the model with parameter tensors `params` (in layout
    /// order and shape) on `input`.
    fn forward(&self, params: &[Tensor], input: &Tensor) -> candle_core::Result<Tensor>;
}

/// Where the time of the last local step went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimings {
    /// Building the parameters, the forward pass and the loss.
    pub forward: Duration,
    /// Back-propagation, down to the flat gradient.
    pub backward: Duration,
    /// The optimizer's update.
    pub optimizer: Duration,
}

/// Models with at least this many parameters are scored in parallel; smaller ones score
/// faster than a thread wakes up.
const PARALLEL_SCORING_PARAMS: usize = 16_384;

/// The round's mini-batch, ready for the model.
struct Batch {
    input: Tensor,
    labels: Vec<u32>,
    /// Whether the local step uses this batch (the node learns from it).
    step: bool,
}

/// The per-node state of a classification task: its data, its batches and its optimizer.
pub struct Classifier<M> {
    model: M,
    train: Examples,
    test: Examples,
    batch_size: usize,
    step_size: f64,
    optimizer: OptimizerState,
    test_every: u64,
    rounds: u64,
    data_fraction: f64,
    init_seed: u64,
    batch_rng: SmallRng,
    order: Vec<usize>,
    next: usize,
    batch: Option<Batch>,
    timings: StepTimings,
}

impl<M: Model> Classifier<M> {
    /// Sets up a node's classifier on its training and held-out examples.
    ///
    /// `data_fraction` is the share of rounds in which the node learns from its batch (1 for
    /// every round); it must lie in (0, 1].
    pub fn new(
        ctx: &TaskContext,
        model: M,
        train: Examples,
        test: Examples,
        data_fraction: f64,
    ) -> Result<Self, TaskError> {
        let shard_error = |reason: String| TaskError::Shard {
            node: ctx.node_id.clone(),
            reason,
        };
        if train.is_empty() || test.is_empty() {
            return Err(shard_error(format!(
                "needs training and held-out examples, has {} and {}",
                train.len(),
                test.len()
            )));
        }
        if ctx.settings.batch_size == 0 {
            return Err(shard_error("batch size must be at least 1".into()));
        }
        if !(data_fraction > 0.0 && data_fraction <= 1.0) {
            return Err(shard_error(format!(
                "data fraction {data_fraction} is not in (0, 1]"
            )));
        }
        let optimizer = match ctx.settings.optimizer {
            Optimizer::Sgd => OptimizerState::Sgd,
            Optimizer::Adam => OptimizerState::adam(model.layout().len()),
        };
        Ok(Self {
            model,
            train,
            test,
            batch_size: ctx.settings.batch_size,
            step_size: ctx.step_size,
            optimizer,
            test_every: ctx.settings.test_every,
            rounds: ctx.rounds,
            data_fraction,
            init_seed: ctx.init_seed(Init::Shared),
            batch_rng: seed::rng(ctx.seed, Stream::Task, &[BATCH_STREAM]),
            order: Vec::new(),
            next: 0,
            batch: None,
            timings: StepTimings::default(),
        })
    }

    /// The model's architecture.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The node's training examples.
    pub fn train_examples(&self) -> &Examples {
        &self.train
    }

    /// The node's held-out examples.
    pub fn test_examples(&self) -> &Examples {
        &self.test
    }

    /// Where the time of the last local step went.
    pub fn timings(&self) -> StepTimings {
        self.timings
    }

    /// Whether the round's batch is used for a local step.
    pub fn steps_this_round(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| b.step)
    }

    /// Relabels every example, training and held-out: class `c` becomes `classes - 1 - c`.
    /// This is how a `label-flip` attacker poisons its own data.
    pub fn flip_labels(&mut self) {
        let top = self.model.classes() as u32 - 1;
        for examples in [&mut self.train, &mut self.test] {
            for label in &mut examples.labels {
                *label = top - *label;
            }
        }
        self.batch = None;
    }

    /// The initial model: by default the same on every node of the network (see [`Init`]).
    pub fn init(&mut self) -> Vec<f32> {
        let mut rng = seed::rng(self.init_seed, Stream::Task, &[INIT_STREAM]);
        self.model.init(&mut rng)
    }

    /// Draws the batch of `round`.
    ///
    /// Every round draws the next batch, which the node scores models on; a node that learns
    /// from only a fraction of the batches takes its local step in that share of the rounds
    /// and leaves its model as it is in the others (as the authors' experiments model nodes
    /// with less data).
    pub fn next_batch(&mut self, round: u64) -> Result<(), TaskError> {
        let step = sees_batch(round, self.data_fraction);

        // Walk through the training part in a new random order each epoch; a remainder too
        // short for a full batch waits for the next epoch.
        let size = self.batch_size.min(self.train.len());
        if self.next + size > self.order.len() {
            self.order = (0..self.train.len()).collect();
            self.order.shuffle(&mut self.batch_rng);
            self.next = 0;
        }
        let indices = &self.order[self.next..self.next + size];
        self.next += size;

        let (features, labels) = self.train.gather(indices);
        let input = self.model.input(features, size).map_err(tensor_error)?;
        self.batch = Some(Batch {
            input,
            labels,
            step,
        });
        Ok(())
    }

    /// One local step from `model` on the round's batch, written to `adapted`; returns the
    /// metrics of `model` on the batch before the step.
    pub fn adapt(&mut self, model: &[f32], adapted: &mut [f32]) -> Result<BatchMetrics, TaskError> {
        let batch = self.batch.as_ref().ok_or_else(no_batch)?;

        // A round without a new batch leaves the model as it is.
        if !batch.step {
            let started = Instant::now();
            let metrics = batch_metrics(&self.model, model, &batch.input, &batch.labels)?;
            adapted.copy_from_slice(model);
            self.timings = StepTimings {
                forward: started.elapsed(),
                ..StepTimings::default()
            };
            return Ok(metrics);
        }

        let (metrics, grad, timings) =
            loss_and_gradient(&self.model, model, &batch.input, &batch.labels)?;

        let started = Instant::now();
        self.optimizer.step(self.step_size, model, &grad, adapted);
        self.timings = StepTimings {
            optimizer: started.elapsed(),
            ..timings
        };
        Ok(metrics)
    }

    /// Writes the loss of each model on the round's batch into `out`.
    ///
    /// Large models are scored side by side on the thread pool; each loss is computed alone,
    /// so the numbers do not depend on how many threads there are.
    pub fn losses(&mut self, models: &[&[f32]], out: &mut [f64]) -> Result<(), TaskError> {
        let batch = self.batch.as_ref().ok_or_else(no_batch)?;
        let score = |model: &&[f32]| {
            batch_metrics(&self.model, model, &batch.input, &batch.labels).map(|m| m.loss)
        };
        if self.model.layout().len() >= PARALLEL_SCORING_PARAMS {
            let losses: Vec<Result<f64, TaskError>> = models.par_iter().map(score).collect();
            for (out, loss) in out.iter_mut().zip(losses) {
                *out = loss?;
            }
        } else {
            for (out, model) in out.iter_mut().zip(models) {
                *out = score(model)?;
            }
        }
        Ok(())
    }

    /// Evaluates `model` on the held-out part when an evaluation is due after `round`.
    pub fn test(&mut self, round: u64, model: &[f32]) -> Result<Option<TestMetrics>, TaskError> {
        if !test_due(round, self.test_every, self.rounds) {
            return Ok(None);
        }
        let params = param_tensors(self.model.layout(), model).map_err(tensor_error)?;
        let classes = self.model.classes();
        let (mut loss, mut correct) = (0.0, 0);
        let indices: Vec<usize> = (0..self.test.len()).collect();
        for chunk in indices.chunks(TEST_CHUNK) {
            let (features, labels) = self.test.gather(chunk);
            let logits = self
                .model
                .input(features, chunk.len())
                .and_then(|input| self.model.forward(&params, &input))
                .and_then(|logits| logits.flatten_all()?.to_vec1::<f32>())
                .map_err(tensor_error)?;
            let (sum, right) = cross_entropy(&logits, &labels, classes, None);
            loss += sum;
            correct += right;
        }
        let n = self.test.len() as f64;
        Ok(Some(TestMetrics {
            round,
            loss: loss / n,
            accuracy: correct as f64 / n,
        }))
    }
}

/// The default `data_fraction` of a shard: the node learns from every batch.
pub fn every_batch() -> f64 {
    1.0
}

/// Whether a node that learns from `fraction` of the batches steps in `round`: the rounds
/// that do are spread evenly, beginning with round 0 (with 0.1, rounds 0, 10, 20, ...).
pub fn sees_batch(round: u64, fraction: f64) -> bool {
    if round == 0 || fraction >= 1.0 {
        return true;
    }
    // A small slack keeps products such as 10 * 0.1 from landing just below an integer.
    let seen = |r: u64| (r as f64 * fraction + 1e-9).floor();
    seen(round) > seen(round - 1)
}

/// Whether a held-out evaluation is due after `round`: after every `every` rounds (none if 0)
/// and after the last round.
pub fn test_due(round: u64, every: u64, rounds: u64) -> bool {
    let periodic = every > 0 && (round + 1).is_multiple_of(every);
    periodic || round + 1 == rounds
}

/// Shuffles `0..n` with `rng` and cuts it into a training part of about `train_share` of the
/// examples and a held-out part, each with at least one example (so `n` must be at least 2).
pub fn split(n: usize, train_share: f64, rng: &mut impl Rng) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let cut = ((n as f64 * train_share).round() as usize).clamp(1, n.saturating_sub(1));
    let test = order.split_off(cut);
    (order, test)
}

/// The parameter tensors of a flat vector laid out by `layout`.
pub fn param_tensors(layout: &Layout, values: &[f32]) -> candle_core::Result<Vec<Tensor>> {
    check_len(layout, values)?;
    layout
        .ranges()
        .map(|(spec, range)| {
            Tensor::from_slice(&values[range], spec.shape.as_slice(), &Device::Cpu)
        })
        .collect()
}

/// Fails unless `values` has exactly the layout's length.
fn check_len(layout: &Layout, values: &[f32]) -> candle_core::Result<()> {
    if values.len() == layout.len() {
        return Ok(());
    }
    Err(candle_core::Error::Msg(format!(
        "model has {} values, the layout {}",
        values.len(),
        layout.len()
    )))
}

/// The loss and accuracy of the model with parameters `values` on one batch.
pub fn batch_metrics<M: Model>(
    model: &M,
    values: &[f32],
    input: &Tensor,
    labels: &[u32],
) -> Result<BatchMetrics, TaskError> {
    let logits = param_tensors(model.layout(), values)
        .and_then(|params| model.forward(&params, input))
        .and_then(|logits| logits.flatten_all()?.to_vec1::<f32>())
        .map_err(tensor_error)?;
    let (loss, correct) = cross_entropy(&logits, labels, model.classes(), None);
    Ok(metrics(loss, correct, labels.len()))
}

/// The metrics of the model with parameters `values` on one batch, the gradient of the mean
/// loss with respect to `values`, and where the time went.
pub fn loss_and_gradient<M: Model>(
    model: &M,
    values: &[f32],
    input: &Tensor,
    labels: &[u32],
) -> Result<(BatchMetrics, Vec<f32>, StepTimings), TaskError> {
    let started = Instant::now();
    let layout = model.layout();
    check_len(layout, values).map_err(tensor_error)?;

    // Forward with every parameter tensor as a variable, then the loss and its gradient with
    // respect to the logits.
    let vars: Vec<Var> = layout
        .ranges()
        .map(|(spec, range)| Var::from_slice(&values[range], spec.shape.as_slice(), &Device::Cpu))
        .collect::<candle_core::Result<_>>()
        .map_err(tensor_error)?;
    let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let logits = model.forward(&params, input).map_err(tensor_error)?;
    let values_out = logits
        .flatten_all()
        .and_then(|l| l.to_vec1::<f32>())
        .map_err(tensor_error)?;
    let mut dlogits = vec![0.0f32; values_out.len()];
    let (loss, correct) = cross_entropy(&values_out, labels, model.classes(), Some(&mut dlogits));
    let forward = started.elapsed();

    // The gradient of sum(logits * dlogits), with dlogits held constant, is the gradient of
    // the loss: candle carries it back through the model.
    let started = Instant::now();
    let mut grad = vec![0.0f32; layout.len()];
    let grads = Tensor::from_vec(dlogits, logits.shape(), &Device::Cpu)
        .and_then(|d| logits.mul(&d)?.sum_all()?.backward())
        .map_err(tensor_error)?;
    for ((_, range), var) in layout.ranges().zip(&vars) {
        if let Some(g) = grads.get(var) {
            let g = g
                .flatten_all()
                .and_then(|g| g.to_vec1::<f32>())
                .map_err(tensor_error)?;
            grad[range].copy_from_slice(&g);
        }
    }
    let timings = StepTimings {
        forward,
        backward: started.elapsed(),
        optimizer: Duration::ZERO,
    };
    Ok((metrics(loss, correct, labels.len()), grad, timings))
}

/// Mean softmax cross-entropy pieces of a batch of logits (`classes` per example): returns the
/// summed loss and the number of examples whose largest logit is their label. With `grad`, also
/// writes the gradient of the *mean* loss with respect to each logit.
///
/// A model with NaN or infinite logits gets a NaN or infinite loss and counts as wrong.
pub fn cross_entropy<T: Copy + Into<f64>>(
    logits: &[T],
    labels: &[u32],
    classes: usize,
    mut grad: Option<&mut [f32]>,
) -> (f64, usize) {
    let n = labels.len().max(1) as f64;
    let (mut loss, mut correct) = (0.0, 0);
    for (i, &label) in labels.iter().enumerate() {
        let row = &logits[i * classes..(i + 1) * classes];
        let label = label as usize;

        // Log-sum-exp with the largest logit taken out, and the first largest as the guess.
        let mut best = 0;
        let mut max = f64::NEG_INFINITY;
        for (c, &v) in row.iter().enumerate() {
            let v: f64 = v.into();
            if v > max {
                max = v;
                best = c;
            }
        }
        let sum: f64 = row.iter().map(|&v| (v.into() - max).exp()).sum();
        let log_z = max + sum.ln();
        let at_label: f64 = row[label].into();
        loss += log_z - at_label;
        if best == label && at_label.is_finite() && max.is_finite() {
            correct += 1;
        }

        if let Some(grad) = grad.as_deref_mut() {
            let out = &mut grad[i * classes..(i + 1) * classes];
            for (c, (o, &v)) in out.iter_mut().zip(row).enumerate() {
                let p = (v.into() - log_z).exp();
                let target = if c == label { 1.0 } else { 0.0 };
                *o = ((p - target) / n) as f32;
            }
        }
    }
    (loss, correct)
}

fn metrics(loss: f64, correct: usize, n: usize) -> BatchMetrics {
    let n = n.max(1) as f64;
    BatchMetrics {
        loss: loss / n,
        accuracy: Some(correct as f64 / n),
    }
}

/// The state of the local optimizer, which outlives rounds although the engine replaces the
/// model by the combination every round.
#[derive(Debug, Clone)]
enum OptimizerState {
    Sgd,
    Adam { m: Vec<f32>, v: Vec<f32>, t: i32 },
}

impl OptimizerState {
    fn adam(len: usize) -> Self {
        Self::Adam {
            m: vec![0.0; len],
            v: vec![0.0; len],
            t: 0,
        }
    }

    /// Writes `model` after one step along `grad` to `adapted`.
    fn step(&mut self, lr: f64, model: &[f32], grad: &[f32], adapted: &mut [f32]) {
        match self {
            Self::Sgd => {
                let lr = lr as f32;
                for ((a, &w), &g) in adapted.iter_mut().zip(model).zip(grad) {
                    *a = w - lr * g;
                }
            }
            Self::Adam { m, v, t } => {
                *t = t.saturating_add(1);
                let (b1, b2) = (ADAM_BETA1 as f32, ADAM_BETA2 as f32);
                let correction1 = (1.0 - ADAM_BETA1.powi(*t)) as f32;
                let correction2 = (1.0 - ADAM_BETA2.powi(*t)).sqrt() as f32;
                let lr = lr as f32 / correction1;
                for i in 0..adapted.len() {
                    let g = grad[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * g;
                    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                    adapted[i] = model[i] - lr * m[i] / (v[i].sqrt() / correction2 + ADAM_EPS);
                }
            }
        }
    }
}

/// Data sets that several nodes of one process share, loaded once and kept while in use.
pub struct SharedData<T> {
    entries: Mutex<Vec<(PathBuf, Weak<T>)>>,
}

impl<T> SharedData<T> {
    /// An empty cache.
    pub const fn new() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The data known by `key` (a canonical path), loading it with `load` unless another node
    /// still holds it.
    pub fn get_or_load(
        &self,
        key: &Path,
        load: impl FnOnce() -> Result<T, TaskError>,
    ) -> Result<Arc<T>, TaskError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(_, data)| data.strong_count() > 0);
        if let Some(data) = entries
            .iter()
            .find(|(path, _)| path == key)
            .and_then(|(_, data)| data.upgrade())
        {
            return Ok(data);
        }
        let data = Arc::new(load()?);
        entries.push((key.to_path_buf(), Arc::downgrade(&data)));
        Ok(data)
    }
}

impl<T> Default for SharedData<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A candle failure as a task error.
pub fn tensor_error(e: candle_core::Error) -> TaskError {
    TaskError::Tensor(e.to_string())
}

fn no_batch() -> TaskError {
    TaskError::Tensor("no batch has been drawn for this round".into())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use candle_core::DType;

    /// The mean loss of the model with f64 parameters `values` on a batch, computed wholly in
    /// f64: the reference for finite-difference gradient checks.
    pub fn loss_f64<M: Model>(model: &M, values: &[f64], input: &Tensor, labels: &[u32]) -> f64 {
        let params: Vec<Tensor> = model
            .layout()
            .ranges()
            .map(|(spec, range)| {
                Tensor::from_slice(&values[range], spec.shape.as_slice(), &Device::Cpu)
                    .expect("parameter tensor")
            })
            .collect();
        let input = input.to_dtype(DType::F64).expect("f64 input");
        let logits = model.forward(&params, &input).expect("forward");
        let logits = logits
            .flatten_all()
            .and_then(|l| l.to_vec1::<f64>())
            .expect("logits");
        cross_entropy(&logits, labels, model.classes(), None).0 / labels.len() as f64
    }

    /// Checks the production gradient (f32, candle autograd) of a model against central
    /// finite differences of [`loss_f64`] at `coords_per_tensor` coordinates of every
    /// parameter tensor (all of them if fewer): asserts cosine similarity above 0.999 and a
    /// relative error below `max_rel` per tensor.
    ///
    /// The step is 1e-7: f64 rounding then costs about 1e-9 per difference, and a ReLU or
    /// max-pool switching inside the step (which spoils a difference) is a hundred times less
    /// likely than with the usual 1e-5.
    pub fn check_gradient<M: Model>(
        model: &M,
        values: &[f32],
        input: &Tensor,
        labels: &[u32],
        coords_per_tensor: usize,
        max_rel: f64,
    ) {
        let (_, grad, _) = loss_and_gradient(model, values, input, labels).expect("gradient");
        let mut at: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        let mut rng = seed::rng(7, Stream::Task, &[]);
        let eps = 1e-7;
        for (spec, range) in model.layout().ranges() {
            let coords: Vec<usize> = if range.len() <= coords_per_tensor {
                range.clone().collect()
            } else {
                rand::seq::index::sample(&mut rng, range.len(), coords_per_tensor)
                    .into_iter()
                    .map(|i| range.start + i)
                    .collect()
            };
            let (mut dot, mut na, mut ne, mut diff) = (0.0, 0.0, 0.0, 0.0);
            for &i in &coords {
                let keep = at[i];
                at[i] = keep + eps;
                let up = loss_f64(model, &at, input, labels);
                at[i] = keep - eps;
                let down = loss_f64(model, &at, input, labels);
                at[i] = keep;
                let expected = (up - down) / (2.0 * eps);
                let actual = f64::from(grad[i]);
                dot += expected * actual;
                na += actual * actual;
                ne += expected * expected;
                diff += (actual - expected).powi(2);
            }
            assert!(ne > 0.0, "{}: finite differences are all zero", spec.name);
            let cosine = dot / (na.sqrt() * ne.sqrt());
            let rel = diff.sqrt() / ne.sqrt();
            assert!(cosine > 0.999, "{}: cosine {cosine}", spec.name);
            assert!(rel < max_rel, "{}: relative error {rel}", spec.name);
        }
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        // Logits (0, ln 3) with label 1: p = (1/4, 3/4), loss = -ln(3/4) = 0.2876821;
        // gradient (p - onehot) / 2 for a batch of two = (0.125, -0.125).
        // Second row (2, 0) with label 1: loss = ln(1 + e^2) = 2.1269280, guess 0 is wrong.
        let logits = [0.0f32, 3f32.ln(), 2.0, 0.0];
        let mut grad = [0.0f32; 4];
        let (loss, correct) = cross_entropy(&logits, &[1, 1], 2, Some(&mut grad));
        assert!((loss - (0.2876821 + 2.1269280)).abs() < 1e-6);
        assert_eq!(correct, 1);
        assert!((grad[0] - 0.125).abs() < 1e-6 && (grad[1] + 0.125).abs() < 1e-6);
    }

    #[test]
    fn wild_logits_give_a_non_finite_loss() {
        let (loss, correct) = cross_entropy(&[f32::NAN, 0.0], &[0], 2, None);
        assert!(!loss.is_finite());
        assert_eq!(correct, 0);
        let (loss, _) = cross_entropy(&[f32::INFINITY, 0.0], &[1], 2, None);
        assert!(!loss.is_finite());
    }

    #[test]
    fn a_tenth_of_the_batches_means_every_tenth_round() {
        let seen: Vec<u64> = (0..35).filter(|&r| sees_batch(r, 0.1)).collect();
        assert_eq!(seen, vec![0, 10, 20, 30]);
        assert!((0..20).all(|r| sees_batch(r, 1.0)));
        assert_eq!((0..100).filter(|&r| sees_batch(r, 0.25)).count(), 25);
    }

    #[test]
    fn evaluations_are_due_periodically_and_after_the_last_round() {
        let due: Vec<u64> = (0..10).filter(|&r| test_due(r, 4, 10)).collect();
        assert_eq!(due, vec![3, 7, 9]);
        let due: Vec<u64> = (0..10).filter(|&r| test_due(r, 0, 10)).collect();
        assert_eq!(due, vec![9]);
    }

    #[test]
    fn split_is_three_to_one_and_disjoint() {
        let mut rng = seed::rng(1, Stream::Task, &[SHARD_STREAM]);
        let (train, test) = split(40, 0.75, &mut rng);
        assert_eq!((train.len(), test.len()), (30, 10));
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        let (train, test) = split(2, 0.75, &mut rng);
        assert_eq!((train.len(), test.len()), (1, 1));
    }

    #[test]
    fn adam_first_step_moves_each_parameter_by_the_step_size() {
        // With zero moments, Adam's first step is lr * g / (|g| + eps'), i.e. lr * sign(g).
        let mut adam = OptimizerState::adam(3);
        let mut out = [0.0f32; 3];
        adam.step(0.01, &[1.0, 1.0, 1.0], &[2.0, -0.5, 0.0], &mut out);
        assert!((out[0] - 0.99).abs() < 1e-6);
        assert!((out[1] - 1.01).abs() < 1e-6);
        assert_eq!(out[2], 1.0);
    }
}
