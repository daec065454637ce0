//! Comparisons: one network run once per rule, with the same seeds, side by side.
//!
//! Each rule's run goes to `<out>/<rule>/` (launched as processes, or simulated in this
//! process), and the comparison writes the table (`<out>/summary.txt`, `<out>/summary.json`)
//! and the figures (`<out>/loss.{svg,png}`, `<out>/network.{svg,png}`).

use std::future::Future;
use std::path::{Path, PathBuf};

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
            Ok(RunData {
                topology: ran,
                losses: result.losses,
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
    write("summary.txt", report::table(&summaries))?;
    write(
        "summary.json",
        serde_json::to_string_pretty(&summaries).unwrap_or_default(),
    )?;
    Ok(Comparison { summaries, figures })
}
