//! The round engine: one node's adapt-then-combine iteration, free of any transport.
//!
//! Round `i` on an honest node:
//!
//! 1. **adapt**: draw the round's batch and take one local step from my model; the result is
//!    my adapted model, the one I publish for round `i`;
//! 2. (the driver publishes it and gathers my neighbours' adapted models of round `i`);
//! 3. **score**: measure each received model, and my own, on my batch (or by its distance to
//!    my previous model) and fold that into the moving-average scores;
//! 4. **weigh**: apply the rule;
//! 5. **combine**: my model for round `i` is the weighted sum of the adapted models.
//!
//! [`Engine`] does steps 1 and 3-5 on flat vectors. [`crate::driver`] runs it against an
//! exchange; the simulator runs many engines in lockstep. Both call the very same methods, so
//! a seeded network gives the same numbers either way.

use serde::Serialize;

use crate::params::{self, Layout};
use crate::rules::{self, Measure, Rule};
use crate::tasks::{BatchMetrics, Task, TaskError, TestMetrics};
use std::sync::Arc;

/// The rule settings an engine runs with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleSettings {
    /// The weight rule.
    pub rule: Rule,
    /// Weight of the newest sample in a score, `nu`.
    pub forgetting_factor: f64,
    /// Every score's value before the first round.
    pub initial_score: f64,
}

/// One honest node's learning state.
pub struct Engine {
    task: Box<dyn Task>,
    settings: RuleSettings,
    /// My model after the last combination, `theta_{k,i-1}`.
    model: Vec<f32>,
    /// My adapted model of the current round, `theta-hat_{k,i}`.
    adapted: Vec<f32>,
    /// Scratch space for the combination.
    combined: Vec<f32>,
    /// What adapt measured of my model on the round's batch.
    adapt_metrics: BatchMetrics,
    /// Per neighbourhood position (0 is me): score, this round's sample, whether the sample
    /// was usable, weight, and whether the rule filtered the position out.
    scores: Vec<f64>,
    samples: Vec<Option<f64>>,
    usable: Vec<bool>,
    weights: Vec<f64>,
    filtered: Vec<bool>,
    /// Rounds whose combination was not finite (warned about once).
    overflows: u64,
    /// Scratch space for the losses of the models that arrived.
    losses: Vec<f64>,
}

/// What one round came to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundOutcome {
    /// The loss reported for the round (see [`Task::round_metrics`]).
    pub loss: f64,
    /// Training accuracy, for classification tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The held-out evaluation, when one was due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<TestMetrics>,
}

impl Engine {
    /// An engine for a node with `neighbours` neighbours (itself not counted).
    pub fn new(mut task: Box<dyn Task>, settings: RuleSettings, neighbours: usize) -> Self {
        let model = task.init();
        let n = neighbours + 1;
        Self {
            adapted: model.clone(),
            combined: model.clone(),
            model,
            task,
            settings,
            adapt_metrics: BatchMetrics::default(),
            scores: vec![settings.initial_score; n],
            samples: vec![None; n],
            usable: vec![false; n],
            weights: vec![0.0; n],
            filtered: vec![false; n],
            overflows: 0,
            losses: Vec::with_capacity(n),
        }
    }

    /// The model's layout.
    pub fn layout(&self) -> &Arc<Layout> {
        self.task.layout()
    }

    /// The task.
    pub fn task(&self) -> &dyn Task {
        self.task.as_ref()
    }

    /// The rule settings.
    pub fn settings(&self) -> RuleSettings {
        self.settings
    }

    /// Step 1: draws the round's batch and takes the local step. Returns the adapted model.
    pub fn adapt(&mut self, round: u64) -> Result<&[f32], TaskError> {
        self.task.next_batch(round)?;
        self.adapt_metrics = self.task.adapt(&self.model, &mut self.adapted)?;
        Ok(&self.adapted)
    }

    /// My adapted model of the current round.
    pub fn adapted(&self) -> &[f32] {
        &self.adapted
    }

    /// My model after the last combination.
    pub fn model(&self) -> &[f32] {
        &self.model
    }

    /// Steps 3 to 5: scores the received adapted models, weighs them and combines.
    ///
    /// `received[l]` is neighbour `l`'s adapted model of this round (in topology order), or
    /// `None` if it did not arrive in time or failed validation.
    pub fn combine(
        &mut self,
        round: u64,
        received: &[Option<&[f32]>],
    ) -> Result<RoundOutcome, TaskError> {
        debug_assert_eq!(received.len() + 1, self.scores.len());
        let model_at = |l: usize| {
            if l == 0 {
                Some(&self.adapted[..])
            } else {
                received[l - 1]
            }
        };

        // Score: measure every model that arrived, mine included. Losses are asked for all
        // at once, so that a task can score the models side by side.
        let measure = self.settings.rule.measure();
        for l in 0..self.scores.len() {
            self.samples[l] = match (measure, model_at(l)) {
                (_, None) => None,
                (Measure::Nothing | Measure::Loss, Some(_)) => Some(0.0),
                (Measure::Distance, Some(m)) => Some(params::squared_distance(&self.model, m)),
            };
        }
        if measure == Measure::Loss {
            // A small neighbourhood's list of models lives on the stack: no allocation per
            // round for the simulator's thousands of small nodes.
            let n = self.scores.len();
            let mut on_stack: [&[f32]; 16] = [&[]; 16];
            let mut on_heap: Vec<&[f32]> = Vec::new();
            let slots: &mut [&[f32]] = if n <= on_stack.len() {
                &mut on_stack[..n]
            } else {
                on_heap.resize(n, &[]);
                &mut on_heap
            };
            let mut count = 0;
            for (slot, model) in slots.iter_mut().zip((0..n).filter_map(model_at)) {
                *slot = model;
                count += 1;
            }
            let models = &slots[..count];
            self.losses.resize(count, 0.0);
            self.task.losses(models, &mut self.losses)?;
            let mut losses = self.losses.iter();
            for sample in self.samples.iter_mut().filter(|s| s.is_some()) {
                *sample = losses.next().copied();
            }
        }
        if measure == Measure::Nothing {
            for (ok, s) in self.usable.iter_mut().zip(&self.samples) {
                *ok = s.is_some();
            }
        } else {
            let nu = self.settings.forgetting_factor;
            rules::update_scores(&mut self.scores, &self.samples, nu, &mut self.usable);
        }

        // Weigh: I always take part, even if my own sample was unusable.
        self.usable[0] = true;
        rules::weigh(
            self.settings.rule,
            &self.scores,
            &self.usable,
            &mut self.weights,
            &mut self.filtered,
        );

        // Combine the adapted models with positive weight.
        self.combined.iter_mut().for_each(|v| *v = 0.0);
        for (l, &w) in self.weights.iter().enumerate() {
            if w == 0.0 {
                continue;
            }
            if let Some(m) = model_at(l) {
                params::axpy(&mut self.combined, w, m);
            }
        }
        // Models that each passed validation can still sum past the range of f32 (a neighbour
        // sending huge values under a rule that trusts it); rather than carry infinities and
        // NaN into every later round, the node keeps its own adapted model for this one.
        if !self.combined.iter().all(|v| v.is_finite()) {
            let message = "combined model is not finite; keeping my adapted model";
            if self.overflows == 0 {
                tracing::warn!(round, "{message}");
            } else {
                tracing::debug!(round, "{message}");
            }
            self.overflows += 1;
            self.combined.copy_from_slice(&self.adapted);
            self.weights.iter_mut().for_each(|w| *w = 0.0);
            self.weights[0] = 1.0;
        }
        std::mem::swap(&mut self.model, &mut self.combined);

        let metrics = self.task.round_metrics(self.adapt_metrics, &self.model)?;
        let test = self.task.test(round, &self.model)?;
        Ok(RoundOutcome {
            loss: metrics.loss,
            accuracy: metrics.accuracy,
            test,
        })
    }

    /// Scores by neighbourhood position (0 is me).
    pub fn scores(&self) -> &[f64] {
        &self.scores
    }

    /// The last round's weights by neighbourhood position (0 is me).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Which positions the rule filtered out in the last round.
    pub fn filtered(&self) -> &[bool] {
        &self.filtered
    }
}
