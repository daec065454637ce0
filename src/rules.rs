//! Weight rules: how a node turns its neighbours' scores into combination weights.
//!
//! Everything here is a pure function on flat slices indexed by neighbourhood position, with
//! the node itself at index 0. A score is the exponential moving average
//! `phi = (1 - nu) * phi + nu * loss` of a neighbour's loss on my data (or, for `distance`, of
//! its squared distance to my previous model). The rules are the paper's:
//!
//! - `loss-filtered` (eq. 11): drop every neighbour whose score is above mine, weight the rest
//!   by inverse score;
//! - `loss` (eq. 10): inverse score over everyone who took part;
//! - `distance` (eq. 4): inverse smoothed squared distance to my previous model;
//! - `average`: equal weights over everyone who took part;
//! - `none`: weight 1 on myself.

use serde::{Deserialize, Serialize};

/// A weight rule, by its topology name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Inverse-score weights over neighbours that score no worse than me (paper eq. 11).
    #[default]
    LossFiltered,
    /// Inverse-score weights over every neighbour (paper eq. 10).
    Loss,
    /// Inverse smoothed squared distance to my previous model (paper eq. 4).
    Distance,
    /// Equal weights over the neighbourhood.
    Average,
    /// No cooperation: weight 1 on myself.
    None,
}

impl Rule {
    /// Every rule, in the order reports list them.
    pub const ALL: [Rule; 5] = [
        Rule::LossFiltered,
        Rule::Loss,
        Rule::Distance,
        Rule::Average,
        Rule::None,
    ];

    /// The four rules the paper compares, in its order.
    pub const PAPER: [Rule; 4] = [
        Rule::LossFiltered,
        Rule::Distance,
        Rule::Average,
        Rule::None,
    ];

    /// The rule's name as written in a topology.
    pub fn name(self) -> &'static str {
        match self {
            Self::LossFiltered => "loss-filtered",
            Self::Loss => "loss",
            Self::Distance => "distance",
            Self::Average => "average",
            Self::None => "none",
        }
    }

    /// What the rule scores neighbours by, if anything.
    pub fn measure(self) -> Measure {
        match self {
            Self::LossFiltered | Self::Loss => Measure::Loss,
            Self::Distance => Measure::Distance,
            Self::Average | Self::None => Measure::Nothing,
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Rule {
    type Err = UnknownRule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownRule(s.to_string()))
    }
}

/// A rule name that is not one of byzmtl's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rule `{0}` (expected loss-filtered, loss, distance, average or none)")]
pub struct UnknownRule(pub String);

/// The quantity a rule's scores are moving averages of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The model's loss on my batch.
    Loss,
    /// The model's squared distance to my previous model.
    Distance,
    /// Nothing: the rule needs no scores.
    Nothing,
}

/// Folds this round's measurements into the scores.
///
/// `samples[l]` is `None` for a neighbour that did not take part this round; its score stays
/// as it was. A NaN or infinite sample is treated the same way, and the caller excludes that
/// neighbour from the round. Returns, per position, whether the sample was usable.
pub fn update_scores(scores: &mut [f64], samples: &[Option<f64>], nu: f64, usable: &mut [bool]) {
    for ((score, sample), ok) in scores.iter_mut().zip(samples).zip(usable.iter_mut()) {
        *ok = match sample {
            Some(x) if x.is_finite() => {
                *score = (1.0 - nu) * *score + nu * x;
                true
            }
            _ => false,
        };
    }
}

/// Computes the combination weights of one round.
///
/// `present[l]` says whether position `l` takes part this round (its model arrived, passed
/// validation and had a finite measurement). Position 0 is the node itself and always takes
/// part. Writes the weights into `weights` (they sum to 1) and, per position, whether the rule
/// filtered that neighbour out into `filtered`.
///
/// ```
/// use byzmtl::rules::{Rule, weigh};
///
/// // Me (score 2), a good neighbour (1) and a Byzantine one (40): eq. 11 drops the
/// // Byzantine neighbour and weighs the rest by inverse score, 1/2 and 1 over 3/2.
/// let (mut weights, mut filtered) = ([0.0; 3], [false; 3]);
/// weigh(Rule::LossFiltered, &[2.0, 1.0, 40.0], &[true; 3], &mut weights, &mut filtered);
/// assert_eq!(filtered, [false, false, true]);
/// assert!((weights[0] - 1.0 / 3.0).abs() < 1e-12 && (weights[1] - 2.0 / 3.0).abs() < 1e-12);
/// assert_eq!(weights[2], 0.0);
/// ```
pub fn weigh(
    rule: Rule,
    scores: &[f64],
    present: &[bool],
    weights: &mut [f64],
    filtered: &mut [bool],
) {
    let n = weights.len();
    debug_assert!(n >= 1 && scores.len() == n && present.len() == n && filtered.len() == n);
    weights.iter_mut().for_each(|w| *w = 0.0);
    filtered.iter_mut().for_each(|f| *f = false);

    // Who is a candidate for a positive weight; I always am.
    let own = scores[0];
    for l in 0..n {
        let candidate = l == 0 || present[l];
        let keep = match rule {
            Rule::None => l == 0,
            Rule::Average | Rule::Loss | Rule::Distance => candidate,
            // A neighbour scoring equal to me is kept (`<=`, as in eq. 11).
            Rule::LossFiltered => {
                let keep = candidate && (l == 0 || scores[l] <= own);
                filtered[l] = candidate && !keep;
                keep
            }
        };
        weights[l] = if keep { 1.0 } else { 0.0 };
    }

    // Inverse-score rules weight candidates by 1 / score.
    if matches!(rule, Rule::LossFiltered | Rule::Loss | Rule::Distance) {
        inverse_score(scores, weights);
    }

    let total: f64 = weights.iter().sum();
    if total > 0.0 && total.is_finite() {
        weights.iter_mut().for_each(|w| *w /= total);
    } else {
        weights.iter_mut().for_each(|w| *w = 0.0);
        weights[0] = 1.0;
    }
}

/// The smallest score a rule inverts; a smaller one (zero included) counts as this.
pub const SCORE_FLOOR: f64 = 1e-12;

/// Turns the 0/1 candidate marks in `weights` into inverse scores.
///
/// Scores are floored at [`SCORE_FLOOR`], so a zero score gets a large but finite weight and
/// every other candidate, me included, keeps a positive one.
fn inverse_score(scores: &[f64], weights: &mut [f64]) {
    for (w, &s) in weights.iter_mut().zip(scores) {
        if *w > 0.0 {
            *w = 1.0 / s.max(SCORE_FLOOR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rule: Rule, scores: &[f64], present: &[bool]) -> (Vec<f64>, Vec<bool>) {
        let mut w = vec![0.0; scores.len()];
        let mut f = vec![false; scores.len()];
        weigh(rule, scores, present, &mut w, &mut f);
        (w, f)
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} != {b:?}");
        }
    }

    // Scores [me 2, a 1, b 4, c 2]: by hand, eq. 11 keeps me, a (1 <= 2) and c (2 <= 2, a tie)
    // and drops b (4 > 2). Inverse scores 1/2, 1, 1/2 sum to 2, so the weights are
    // 0.25, 0.5, 0, 0.25.
    #[test]
    fn loss_filtered_keeps_ties_and_drops_worse() {
        let (w, f) = run(Rule::LossFiltered, &[2.0, 1.0, 4.0, 2.0], &[true; 4]);
        close(&w, &[0.25, 0.5, 0.0, 0.25]);
        assert_eq!(f, vec![false, false, true, false]);
    }

    // Eq. 10 on the same scores: inverse scores 1/2, 1, 1/4, 1/2 sum to 2.25, so the weights
    // are 2/9, 4/9, 1/9, 2/9.
    #[test]
    fn loss_weighs_everyone_by_inverse_score() {
        let (w, f) = run(Rule::Loss, &[2.0, 1.0, 4.0, 2.0], &[true; 4]);
        close(&w, &[2.0 / 9.0, 4.0 / 9.0, 1.0 / 9.0, 2.0 / 9.0]);
        assert!(f.iter().all(|&x| !x));
    }

    // Distance scores [me 0.5, a 0.25, b 1.0]: inverses 2, 4, 1 sum to 7.
    #[test]
    fn distance_weighs_by_inverse_distance() {
        let (w, _) = run(Rule::Distance, &[0.5, 0.25, 1.0], &[true; 3]);
        close(&w, &[2.0 / 7.0, 4.0 / 7.0, 1.0 / 7.0]);
    }

    #[test]
    fn average_and_none() {
        let (w, _) = run(
            Rule::Average,
            &[9.0, 1.0, 5.0, 7.0],
            &[true, true, false, true],
        );
        close(&w, &[1.0 / 3.0, 1.0 / 3.0, 0.0, 1.0 / 3.0]);
        let (w, _) = run(Rule::None, &[9.0, 1.0, 5.0], &[true; 3]);
        close(&w, &[1.0, 0.0, 0.0]);
    }

    // A missing neighbour gets weight 0 and is not counted as filtered; with a, the better
    // one, missing, only me (score 2) and c (score 1) remain: 1/2 and 1 sum to 1.5.
    #[test]
    fn missing_neighbour_gets_no_weight() {
        let (w, f) = run(Rule::LossFiltered, &[2.0, 0.5, 1.0], &[true, false, true]);
        close(&w, &[1.0 / 3.0, 0.0, 2.0 / 3.0]);
        assert_eq!(f, vec![false, false, false]);
    }

    // A zero score counts as 1e-12: its inverse is 1e12, not infinity. With [me 1, a 0, b 0,
    // c 3], eq. 11 keeps me, a and b; the weights are 1, 1e12, 1e12 over 1 + 2e12, so a and b
    // get just under one half each and I keep a small positive weight.
    #[test]
    fn zero_score_takes_the_weight_without_nan() {
        let (w, _) = run(Rule::LossFiltered, &[1.0, 0.0, 0.0, 3.0], &[true; 4]);
        let total = 1.0 + 2e12;
        close(&w, &[1.0 / total, 1e12 / total, 1e12 / total, 0.0]);
        assert!(w[0] > 0.0);
        let (w, _) = run(Rule::Loss, &[0.0, 2.0], &[true; 2]);
        assert!(w.iter().all(|x| x.is_finite()) && w[0] > 0.99);
    }

    #[test]
    fn node_without_neighbours_keeps_itself() {
        for rule in Rule::ALL {
            let (w, f) = run(rule, &[3.0], &[true]);
            close(&w, &[1.0]);
            assert_eq!(f, vec![false]);
        }
    }

    // All neighbours worse than me (Byzantine): I learn alone.
    #[test]
    fn all_worse_neighbours_leave_me_alone() {
        let (w, f) = run(Rule::LossFiltered, &[0.1, 200.0, 150.0], &[true; 3]);
        close(&w, &[1.0, 0.0, 0.0]);
        assert_eq!(f, vec![false, true, true]);
    }

    // Scores start at 10 with nu = 0.1: a loss of 2 gives 0.9 * 10 + 0.1 * 2 = 9.2; a missing or
    // NaN sample leaves the score at 10 and marks the position unusable.
    #[test]
    fn moving_average_skips_missing_and_non_finite() {
        let mut scores = [10.0, 10.0, 10.0, 10.0];
        let mut usable = [false; 4];
        let samples = [Some(2.0), None, Some(f64::NAN), Some(f64::INFINITY)];
        update_scores(&mut scores, &samples, 0.1, &mut usable);
        close(&scores, &[9.2, 10.0, 10.0, 10.0]);
        assert_eq!(usable, [true, false, false, false]);
    }

    #[test]
    fn parses_rule_names() {
        for rule in Rule::ALL {
            assert_eq!(rule.name().parse::<Rule>(), Ok(rule));
        }
        assert!("median".parse::<Rule>().is_err());
    }
}
