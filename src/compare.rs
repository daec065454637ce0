//! Comparisons: one network run once per rule, with the same seeds, side by side.
//!
//! Each rule's run goes to `<out>/<rule>/` (launched as processes, or simulated in this
//! process), and the comparison writes the table (`<out>/summary.txt`, `<out>/summary.json`)
//! and the figures (`<out>/loss.{svg,png}`, `<out>/network.{svg,png}`).
//!
//! [`compare_attacks`] sweeps attacks as well: every Byzantine node runs one attack at a time,
//! each attack's runs go to `<out>/<attack>/<rule>/`, and the matrix of the honest nodes'
//! last-50-rounds mean loss relative to rule `none` goes to `<out>/matrix.txt`.

use std::future::Future;
use std::path::{Path, PathBuf};

use crate::attacks::AttackSpec;
use crate::launcher::{self, LaunchError, LaunchOptions};
use crate::report::{self, ReportError, RunData, Summary};
use crate::rules::Rule;
use crate::simulate::{self, SimError, SimOptions};
use crate::topology::Topology;

/// How each run is carried out.
#[derive(Debug, Clone)]
pub enum Runner {
    /// As real processes on loopback, through the launcher.
    Launch {
        /// The `byzmtl-node` binary.
        node_bin: PathBuf,
        /// Show a progress bar.
        progress: bool,
    },
    /// In this process, through the simulator.
    InProcess,
}

/// What can go wrong in a comparison.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A launched run failed.
    #[error("run with rule `{rule}`: {source}")]
    Launch { rule: Rule, source: LaunchError },
    /// A simulated run failed.
    #[error("run with rule `{rule}`: {source}")]
    Simulate { rule: Rule, source: SimError },
    /// An attack name is not one byzmtl knows.
    #[error("{0}")]
    UnknownAttack(String),
    /// Results could not be read or written.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// What a comparison produced.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// One summary per rule, in the order asked for.
    pub summaries: Vec<Summary>,
    /// The figure files written.
    pub figures: Vec<PathBuf>,
}

/// Runs `topology` under one rule into `dir` and reads the result back.
pub async fn run_one(
    topology: &Topology,
    runner: &Runner,
    dir: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<RunData, CompareError> {
    let rule = topology.rule;
    match runner {
        Runner::Launch { node_bin, progress } => {
            let options = LaunchOptions {
                node_bin: node_bin.clone(),
                out: dir.to_path_buf(),
                progress: *progress,
            };
            launcher::launch(topology, &options, shutdown)
                .await
                .map_err(|source| CompareError::Launch { rule, source })?;
            Ok(RunData::load(dir)?)
        }
        Runner::InProcess => {
            let options = SimOptions { records: true };
            let result = simulate::simulate(topology, options)
                .map_err(|source| CompareError::Simulate { rule, source })?;
            let mut ran = topology.clone();
            ran.out_dir = Some(dir.to_path_buf());
            report::write_topology(dir, &ran)?;
            simulate::write_records(dir, &result)
                .map_err(|source| CompareError::Simulate { rule, source })?;
            let tests = result
                .records
                .iter()
                .map(|r| report::last_test(r))
                .collect();
            Ok(RunData {
                topology: ran,
                losses: result.losses,
                tests,
            })
        }
    }
}

/// Runs `topology` once per rule and writes the table and figures into `out`.
///
/// `interrupted` is polled between and during runs; once it completes, no further run starts.
pub async fn compare<F, S>(
    topology: &Topology,
    rules: &[Rule],
    runner: &Runner,
    out: &Path,
    interrupted: F,
) -> Result<Comparison, CompareError>
where
    F: Fn() -> S,
    S: Future<Output = ()>,
{
    let mut summaries = Vec::new();
    let mut series = Vec::new();
    for &rule in rules {
        let mut t = topology.clone();
        t.rule = rule;
        tracing::info!(%rule, "running");
        let run = run_one(&t, runner, &out.join(rule.name()), interrupted()).await?;
        summaries.push(report::summarize(rule.name(), &run));
        series.push(report::loss_series(rule.name(), &run));
    }

    let mut figures = report::draw_losses(&out.join("loss"), topology, &series)?;
    figures.extend(report::draw_network(&out.join("network"), topology)?);
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| ReportError::Io { path, source })
    };
    let mut text = report::table(&summaries);
    if let Some(accuracy) = report::node_accuracy_table(&summaries) {
        text += &format!("\n{accuracy}");
    }
    write("summary.txt", text)?;
    write(
        "summary.json",
        serde_json::to_string_pretty(&summaries).unwrap_or_default(),
    )?;
    Ok(Comparison { summaries, figures })
}

/// The honest nodes' final loss under each attack and rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackMatrix {
    /// The attacks, in the order asked for.
    pub attacks: Vec<String>,
    /// The rules, in the order asked for, `none` included.
    pub rules: Vec<Rule>,
    /// `tail[a][r]`: the mean over honest nodes of the last-50-rounds mean loss.
    pub tail: Vec<Vec<f64>>,
}

impl AttackMatrix {
    /// The loss of `attack` and `rule` relative to `none` under the same attack.
    pub fn relative(&self, attack: usize, rule: usize) -> f64 {
        let none = self.rules.iter().position(|&r| r == Rule::None);
        none.map_or(f64::NAN, |n| self.tail[attack][rule] / self.tail[attack][n])
    }

    /// The matrix as text: one row per attack, one column per rule, each loss relative to
    /// `none` (whose absolute loss ends the row).
    pub fn table(&self) -> String {
        let mut out = format!("{:<16}", "attack");
        for rule in &self.rules {
            out += &format!(" {:>14}", rule.name());
        }
        out += &format!(" {:>12}\n", "none (abs)");
        let none = self.rules.iter().position(|&r| r == Rule::None);
        for (a, attack) in self.attacks.iter().enumerate() {
            out += &format!("{attack:<16}");
            for r in 0..self.rules.len() {
                // A broken rule can end astronomically far off: keep such ratios short.
                let ratio = self.relative(a, r);
                let ratio = if ratio.abs() < 1e6 {
                    format!("{ratio:.2}x")
                } else {
                    format!("{ratio:.2e}x")
                };
                out += &format!(" {ratio:>14}");
            }
            let abs = none.map_or(f64::NAN, |n| self.tail[a][n]);
            out += &format!(" {abs:>12.4}\n");
        }
        out
    }
}

/// Runs `topology` once per attack (every Byzantine node running it) and rule, and writes
/// each attack's table into `<out>/<attack>/summary.txt` and the matrix into
/// `<out>/matrix.txt`. Rule `none` is added if missing, as the matrix's reference.
pub async fn compare_attacks<F, S>(
    topology: &Topology,
    attacks: &[String],
    rules: &[Rule],
    runner: &Runner,
    out: &Path,
    interrupted: F,
) -> Result<AttackMatrix, CompareError>
where
    F: Fn() -> S,
    S: Future<Output = ()>,
{
    let mut rules = rules.to_vec();
    if !rules.contains(&Rule::None) {
        rules.push(Rule::None);
    }
    let specs = attacks
        .iter()
        .map(|name| AttackSpec::named(name, topology.task_kind()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CompareError::UnknownAttack)?;

    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|source| ReportError::Io { path, source })
    };
    let mut tail = Vec::new();
    for (name, spec) in attacks.iter().zip(specs) {
        let mut t = topology.clone();
        for k in 0..t.nodes.len() {
            if t.attack_of(k).is_some() {
                t.nodes[k].attack = Some(spec.clone());
            }
        }
        let dir = out.join(name);
        let mut summaries = Vec::new();
        for &rule in &rules {
            t.rule = rule;
            tracing::info!(attack = %name, %rule, "running");
            let run = run_one(&t, runner, &dir.join(rule.name()), interrupted()).await?;
            summaries.push(report::summarize(rule.name(), &run));
        }
        write(dir.join("summary.txt"), report::table(&summaries))?;
        tail.push(summaries.iter().map(|s| s.tail_mean).collect());
    }
    let matrix = AttackMatrix {
        attacks: attacks.to_vec(),
        rules,
        tail,
    };
    write(out.join("matrix.txt"), matrix.table())?;
    Ok(matrix)
}
