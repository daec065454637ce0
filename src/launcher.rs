//! The launcher: a whole topology as local `byzmtl-node` processes on loopback.
//!
//! Every node gets a free port on 127.0.0.1; the topology with those addresses is written to
//! the run folder, and every node is started from it with its log in `logs/<id>.log` and its
//! metrics in `<id>.jsonl`. The launcher shows progress (rounds done by the slowest honest
//! node), reports a node that dies with its exit status and the tail of its log (and then
//! stops the rest, since the run can no longer complete), and never
//! leaves a node behind: children are stopped when the launcher is interrupted, dropped, or
//! killed outright (each child asks the kernel for SIGTERM when its parent dies).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::process::{Child, Command};

use crate::report::{self, ReportError};
use crate::status;
use crate::topology::{RoleKind, Topology};

/// What can go wrong launching a network.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The node binary is missing.
    #[error("node binary `{0}` not found (build it, or pass its path)")]
    NoNodeBinary(PathBuf),
    /// Free ports could not be found.
    #[error("cannot find free ports on 127.0.0.1: {0}")]
    Ports(std::io::Error),
    /// A file of the run folder could not be written.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A node could not be started.
    #[error("cannot start node `{id}`: {source}")]
    Spawn { id: String, source: std::io::Error },
    /// Nodes ended with an error.
    #[error("{} node(s) failed: {}", .0.len(), failed_ids(.0))]
    NodesFailed(Vec<NodeFailure>),
    /// The launcher was interrupted; every node was stopped.
    #[error("interrupted; all nodes were stopped")]
    Interrupted,
}

/// The ids of failed nodes, comma-separated.
fn failed_ids(failures: &[NodeFailure]) -> String {
    let ids: Vec<&str> = failures.iter().map(|f| f.id.as_str()).collect();
    ids.join(", ")
}

/// A node that ended with an error.
#[derive(Debug, Clone)]
pub struct NodeFailure {
    /// The node's id.
    pub id: String,
    /// How it ended.
    pub status: String,
    /// The last lines of its log.
    pub log_tail: String,
}

/// How to launch.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The `byzmtl-node` binary.
    pub node_bin: PathBuf,
    /// The run folder.
    pub out: PathBuf,
    /// Show a progress bar on the terminal.
    pub progress: bool,
}

/// The `byzmtl-node` binary next to the running executable.
pub fn sibling_node_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("byzmtl-node")))
        .unwrap_or_else(|| PathBuf::from("byzmtl-node"))
}

/// Gives every node a free loopback port and points the run's metrics at `out`.
pub fn localize(topology: &Topology, out: &Path) -> Result<Topology, LaunchError> {
    // Hold every listener until all ports are chosen, so no two nodes get the same one.
    let listeners = topology
        .nodes
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(LaunchError::Ports)?;
    let mut local = topology.clone();
    for (node, listener) in local.nodes.iter_mut().zip(&listeners) {
        let port = listener.local_addr().map_err(LaunchError::Ports)?.port();
        node.address = format!("127.0.0.1:{port}");
        node.listen = None;
        node.metrics = None;
    }
    local.out_dir = Some(out.to_path_buf());
    Ok(local)
}

struct Running {
    id: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

/// Launches every node of `topology` and waits for all to finish, or for `shutdown`.
///
/// On success the run folder holds `topology.toml`, every honest node's metrics and every
/// node's log.
pub async fn launch(
    topology: &Topology,
    options: &LaunchOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Topology, LaunchError> {
    if !options.node_bin.is_file() {
        return Err(LaunchError::NoNodeBinary(options.node_bin.clone()));
    }
    let local = localize(topology, &options.out)?;
    let topology_path = report::write_topology(&options.out, &local)?;
    let logs = options.out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|source| ReportError::Io {
        path: logs.clone(),
        source,
    })?;

    // Start every node.
    let mut running = Vec::with_capacity(local.nodes.len());
    for node in &local.nodes {
        let log = logs.join(format!("{}.log", node.id));
        let child =
            spawn_node(&options.node_bin, &topology_path, &node.id, &log).map_err(|source| {
                LaunchError::Spawn {
                    id: node.id.clone(),
                    source,
                }
            })?;
        running.push(Running {
            id: node.id.clone(),
            child,
            log,
            status: None,
        });
    }
    tracing::info!(nodes = running.len(), out = %options.out.display(), "network launched");

    // Wait for all, showing progress, until done or interrupted.
    let progress = Progress::new(&local, options.progress);
    let mut failures = Vec::new();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        for r in running.iter_mut().filter(|r| r.status.is_none()) {
            if let Ok(Some(status)) = r.child.try_wait() {
                r.status = Some(status);
                if !status.success() {
                    let failure = NodeFailure {
                        id: r.id.clone(),
                        status: status.to_string(),
                        log_tail: tail(&r.log, 12),
                    };
                    progress.println(&format!(
                        "node `{}` ended with {}; last lines of {}:\n{}",
                        failure.id,
                        failure.status,
                        r.log.display(),
                        failure.log_tail
                    ));
                    failures.push(failure);
                }
            }
        }
        if running.iter().all(|r| r.status.is_some()) {
            break;
        }

        // A failed node makes the run incomplete: stop the others rather than let them
        // wait out a round deadline every round.
        if !failures.is_empty() {
            progress.println("stopping the other nodes");
            stop_all(&mut running).await;
            break;
        }
        tokio::select! {
            _ = tick.tick() => progress.update().await,
            _ = &mut shutdown => {
                progress.finish();
                stop_all(&mut running).await;
                return Err(LaunchError::Interrupted);
            }
        }
    }
    progress.finish();
    if failures.is_empty() {
        Ok(local)
    } else {
        Err(LaunchError::NodesFailed(failures))
    }
}

/// Starts one node with its output in `log`.
fn spawn_node(bin: &Path, topology: &Path, id: &str, log: &Path) -> std::io::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(bin);
    command
        .arg("--topology")
        .arg(topology)
        .arg("--id")
        .arg(id)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    // Error chains, not backtraces, in node logs, unless asked for.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        command.env("RUST_LIB_BACKTRACE", "0");
    }
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec the closure only makes async-signal-safe calls
        // (prctl, getppid) and touches no memory shared with other threads.
        unsafe {
            command.pre_exec(move || {
                // Stop this node when the launcher dies, however it dies.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The launcher may have died before the line above took effect.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("launcher exited"));
                }
                Ok(())
            });
        }
    }
    command.spawn()
}

/// Stops every running node: SIGTERM, then SIGKILL for any still running after 5 seconds.
async fn stop_all(running: &mut [Running]) {
    for r in running.iter_mut().filter(|r| r.status.is_none()) {
        if let Some(pid) = r.child.id() {
            // SAFETY: kill only sends a signal to our own child process.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for r in running.iter_mut().filter(|r| r.status.is_none()) {
        match tokio::time::timeout_at(deadline, r.child.wait()).await {
            Ok(Ok(status)) => r.status = Some(status),
            _ => {
                r.child.kill().await.ok();
            }
        }
    }
}

/// The last `lines` lines of a file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The progress display: rounds done by the slowest honest node.
struct Progress {
    bar: Option<ProgressBar>,
    honest: Vec<(String, String)>,
}

impl Progress {
    fn new(topology: &Topology, show: bool) -> Self {
        let bar = show.then(|| {
            let bar = ProgressBar::new(topology.rounds);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rounds {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let honest = topology
            .nodes
            .iter()
            .filter(|n| n.role == RoleKind::Honest)
            .map(|n| (n.id.clone(), n.address.clone()))
            .collect();
        Self { bar, honest }
    }

    /// Reads every honest node's round and shows the slowest.
    async fn update(&self) {
        let Some(bar) = &self.bar else {
            return;
        };
        let timeout = Duration::from_millis(400);
        let reads = self
            .honest
            .iter()
            .map(|(_, address)| status::get_state(address, timeout));
        let states = futures::future::join_all(reads).await;
        let slowest = self
            .honest
            .iter()
            .zip(&states)
            .filter_map(|((id, _), s)| s.as_ref().ok().map(|s| (s.round + 1, id)))
            .min();
        if let Some((done, id)) = slowest {
            bar.set_position(done.max(0) as u64);
            bar.set_message(format!("(slowest: {id})"));
        }
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
