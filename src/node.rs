//! One peer node: a topology entry brought to life on a bound listener.
//!
//! [`run`] sets up the node's task (or attack), its model store, its gRPC server, its
//! Prometheus metrics endpoint and its exchange, runs its rounds, keeps serving until the
//! neighbours that depend on it are done, and stops. It takes already-bound listeners and a
//! shutdown signal, so tests bind port 0 and the daemon binds its configured addresses.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::attacks::{self, AttackError};
use crate::driver::{self, DriverError, MetricsSink, NodeInfo, Reports, Status, Timing};
use crate::engine::{Engine, RuleSettings};
use crate::exchange::grpc::{BadEndpoint, GrpcExchange};
use crate::metrics::{self, NodeMetrics};
use crate::server::{self, PeerService, ServeError};
use crate::store::{self, ModelStore};
use crate::tasks::{self, TaskError};
use crate::topology::Topology;

/// What can stop a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node's task could not be set up or failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A neighbour's address is unusable.
    #[error(transparent)]
    Endpoint(#[from] BadEndpoint),
    /// The rounds failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The metrics file could not be created.
    #[error("cannot create metrics file `{path}`: {source}")]
    Metrics {
        path: String,
        source: std::io::Error,
    },
    /// The Prometheus metrics endpoint failed.
    #[error("metrics endpoint failed: {0}")]
    MetricsEndpoint(std::io::Error),
    /// The node's attack does not fit the network.
    #[error(transparent)]
    Attack(#[from] AttackError),
}

/// The sockets a node serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// `byzmtl.v1.Peer`, health and reflection.
    pub peer: TcpListener,
    /// The Prometheus metrics endpoint (`GET /metrics`), if the node serves one.
    pub metrics: Option<TcpListener>,
}

/// How a node's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every round ran.
    Finished,
    /// The shutdown signal came first.
    Stopped,
}

/// What a node is, derived from its topology entry.
pub fn info(topology: &Topology, index: usize) -> NodeInfo {
    let node = &topology.nodes[index];
    let neighbours = topology.adjacency()[index]
        .iter()
        .map(|&l| {
            (
                topology.nodes[l].id.clone(),
                topology.nodes[l].address.clone(),
            )
        })
        .collect();
    let role = match topology.attack_of(index) {
        Some(attack) => format!("byzantine:{}", attack.name()),
        None => "honest".to_string(),
    };
    NodeInfo {
        id: node.id.clone(),
        role,
        task: topology.task.kind.to_string(),
        rule: topology.rule.to_string(),
        rounds: topology.rounds,
        address: node.address.clone(),
        metrics_address: node.metrics.clone(),
        neighbours,
    }
}

/// The round timing a topology sets.
pub fn timing(topology: &Topology) -> Timing {
    Timing {
        round_deadline: Duration::from_millis(topology.round_deadline_ms),
        startup_grace: Duration::from_millis(topology.startup_grace_ms),
        linger: Duration::from_millis(topology.linger_ms),
    }
}

/// Runs node `index` of `topology`, serving on `listeners`, until its rounds are done and its
/// neighbours no longer need it, or until `shutdown` completes.
pub async fn run(
    topology: &Topology,
    index: usize,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<Exit, NodeError> {
    let mut info = info(topology, index);
    let timing = timing(topology);

    // The metrics address operators see is the one actually bound.
    info.metrics_address = listeners
        .metrics
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());

    // An honest node sets up its task; a Byzantine node only needs the models' layout.
    let ctx = topology.task_context(index);
    let attack = topology.attack_of(index);
    let task = match attack {
        Some(_) => None,
        None => Some(tasks::build(&ctx)?),
    };
    let layout = match &task {
        Some(task) => task.layout().clone(),
        None => tasks::layout(&ctx)?,
    };
    let attacker = attacks::attacker_of(topology, index, layout.len())?;
    let neighbour_ids = info.neighbours.iter().map(|(id, _)| id.clone());
    let store = ModelStore::new(topology.history, topology.rounds, neighbour_ids, attacker);

    // Serve from the start, so neighbours can fetch as soon as round 0 is published.
    let status = Status::new(&info);
    let metrics = Arc::new(NodeMetrics::new(&info));
    let service = PeerService::new(
        info.id.clone(),
        layout.clone(),
        store.clone(),
        status.subscribe(),
    );
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listeners.peer,
        service,
        topology.max_message_bytes,
        async {
            server_stopped.await.ok();
        },
    ));
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = listeners.metrics.map(|listener| {
        tokio::spawn(metrics::serve(listener, metrics.clone(), async {
            metrics_stopped.await.ok();
        }))
    });

    // Run the rounds (or, for a Byzantine node, follow the neighbours) until done or stopped.
    // Only honest nodes have rounds to record.
    let metrics_path = topology
        .out_dir
        .as_ref()
        .filter(|_| task.is_some())
        .map(|dir| dir.join(format!("{}.jsonl", info.id)));
    let mut sink =
        MetricsSink::create(metrics_path.as_deref()).map_err(|source| NodeError::Metrics {
            path: metrics_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            source,
        })?;
    let work = async {
        let Some(task) = task else {
            // Serve crafted answers, observing the honest neighbours' models if the attack
            // looks at them.
            let idle = timing.startup_grace + timing.linger + timing.round_deadline * 2;
            let observe =
                store::observe_neighbours(topology, index, store.clone(), layout.clone(), timing);
            let (_, observed) = tokio::join!(
                driver::run_byzantine(&store, &status, &metrics, idle),
                observe
            );
            observed?;
            return Ok::<(), NodeError>(());
        };
        let exchange = GrpcExchange::new(
            info.id.clone(),
            store.clone(),
            layout.clone(),
            &info.neighbours,
            topology.max_message_bytes,
        )?;
        let settings = RuleSettings {
            rule: topology.rule,
            forgetting_factor: topology.forgetting_factor,
            initial_score: topology.initial_score,
        };
        let mut engine = Engine::new(task, settings, info.neighbours.len());
        let reports = Reports {
            status: &status,
            metrics: &metrics,
            sink: &mut sink,
        };
        driver::run_honest(&mut engine, &exchange, &info, timing, reports).await?;
        tracing::info!(
            rounds = info.rounds,
            "all rounds done; serving until neighbours finish"
        );
        driver::linger(&store, &status, timing.linger).await;
        Ok(())
    };
    let exit = tokio::select! {
        done = work => { done?; Exit::Finished }
        _ = shutdown => Exit::Stopped,
    };

    // Stop serving. Watchers see the last state and their streams end (the server would
    // otherwise wait for them), waiting requests fail, and both servers drain and end.
    status.update(true, |s| s.phase = "done".into());
    drop(status);
    store.stop();
    stop_server.send(()).ok();
    stop_metrics.send(()).ok();
    match server.await {
        Ok(result) => result?,
        Err(e) => tracing::error!(error = %e, "server task ended abnormally"),
    }
    if let Some(metrics_server) = metrics_server {
        match metrics_server.await {
            Ok(result) => result.map_err(NodeError::MetricsEndpoint)?,
            Err(e) => tracing::error!(error = %e, "metrics endpoint task ended abnormally"),
        }
    }
    Ok(exit)
}
