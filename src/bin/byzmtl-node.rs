//! `byzmtl-node`: one peer of a byzmtl network.
//!
//! Reads the shared topology file, picks its own entry by id, binds its gRPC address (and its
//! Prometheus metrics address, if it has one), and runs its rounds. Settings layer as
//! file < `BYZMTL_*` environment < flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

use byzmtl::logging::{self, LogFormat};
use byzmtl::node::{self, Exit, Listeners};
use byzmtl::rules::Rule;
use byzmtl::topology::{Overrides, Topology};

/// Runs one node of a byzmtl network.
#[derive(Debug, Parser)]
#[command(name = "byzmtl-node", version)]
struct Args {
    /// The topology file shared by the whole network.
    #[arg(long, env = "BYZMTL_TOPOLOGY")]
    topology: PathBuf,
    /// This node's id in the topology.
    #[arg(long, env = "BYZMTL_ID")]
    id: String,
    /// Bind this `host:port` instead of the topology's `listen` or `address`.
    #[arg(long, env = "BYZMTL_LISTEN")]
    listen: Option<String>,
    /// Serve Prometheus metrics at `http://HOST:PORT/metrics`, instead of the topology's
    /// `metrics` address.
    #[arg(long, env = "BYZMTL_METRICS_LISTEN", value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
    /// The weight rule.
    #[arg(long)]
    rule: Option<Rule>,
    /// How many rounds to run.
    #[arg(long)]
    rounds: Option<u64>,
    /// The network's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Step size of the local step.
    #[arg(long)]
    step_size: Option<f64>,
    /// Forgetting factor of the scores.
    #[arg(long)]
    forgetting_factor: Option<f64>,
    /// Round deadline in milliseconds.
    #[arg(long)]
    round_deadline_ms: Option<u64>,
    /// Folder for the per-round metrics file `<id>.jsonl`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Log line format.
    #[arg(long, env = "BYZMTL_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init(args.log_format);

    let overrides = Overrides {
        rule: args.rule,
        rounds: args.rounds,
        seed: args.seed,
        step_size: args.step_size,
        forgetting_factor: args.forgetting_factor,
        round_deadline_ms: args.round_deadline_ms,
        out_dir: args.out,
    };
    let topology = Topology::load(&args.topology, &overrides)?;
    let index = topology.index_of(&args.id)?;
    let entry = &topology.nodes[index];
    let bind = args
        .listen
        .or_else(|| entry.listen.clone())
        .unwrap_or_else(|| entry.address.clone());

    let peer = TcpListener::bind(&bind)
        .await
        .with_context(|| format!("cannot bind `{bind}` for node `{}`", args.id))?;
    let metrics = match args.metrics_listen.or_else(|| entry.metrics.clone()) {
        Some(bind) => Some(TcpListener::bind(&bind).await.with_context(|| {
            format!(
                "cannot bind metrics address `{bind}` for node `{}`",
                args.id
            )
        })?),
        None => None,
    };
    let metrics_address = match &metrics {
        Some(listener) => listener.local_addr()?.to_string(),
        None => "none".to_string(),
    };
    tracing::info!(
        node = %args.id,
        listening = %peer.local_addr()?,
        advertised = %entry.address,
        metrics = %metrics_address,
        rule = %topology.rule,
        rounds = topology.rounds,
        "node started"
    );

    let listeners = Listeners { peer, metrics };
    match node::run(&topology, index, listeners, logging::shutdown_signal()).await? {
        Exit::Finished => tracing::info!(node = %args.id, "node finished"),
        Exit::Stopped => tracing::info!(node = %args.id, "node stopped by signal"),
    }
    Ok(())
}
