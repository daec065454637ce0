//! Container deployments on this machine's Docker engine: the image, docker-compose networks
//! and a single-node Docker Swarm.
//!
//! [`docker_deployments`] runs its scenarios one after the other, since they share one engine,
//! and holds a file lock so that two test processes never run them at once:
//!
//! 1. the image is built offline from the freshly built test binaries
//!    (`deploy/docker-build.sh --bin-dir`), on the local Debian base image;
//! 2. **converge**: the default network (deploy/topologies/compose.toml) comes up with
//!    `byzmtl compose`; every node turns healthy, grpcurl reads an honest node's state from
//!    the host until it has filtered out its Byzantine neighbours (weight 0), the run
//!    finishes, every honest node has converged, and `down -v` leaves no container, network
//!    or volume behind;
//! 3. **kill**: an honest container is killed mid-run; the others keep their round pace and
//!    finish;
//! 4. **swarm**: the default network, cut to 150 rounds, as a stack (`byzmtl compose --swarm`)
//!    on a single-node swarm made for the test, which it leaves afterwards; every node runs
//!    and exits 0, and every honest node converges.
//!
//! In the first two, the network is the default one plus a node `pacer` that is in the
//! topology but never started. Every neighbour of it waits the full round deadline for it, in
//! every round: round 0 lasts the start-up grace, long enough for every container to turn
//! healthy, and each later round lasts one round deadline, so a run takes a known time on any
//! machine and there is time to look at it.
//!
//! Without a Docker engine (`docker info` fails) the test prints why and passes. It contacts
//! nothing outside this machine: the image is built with `--network=none`, and every port is
//! published on the loopback address (the swarm's on all local addresses).
//!
//! [`checked_in_files_are_up_to_date`] needs no engine: it checks that docker-compose.yml,
//! the stack file and the Kubernetes manifests are what `byzmtl compose` makes of the default
//! topology, and has the docker tools validate the first two where they are installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use byzmtl::topology::{Edges, NodeSpec, RoleKind, Topology};

/// The operator's tool.
const CLI_BIN: &str = env!("CARGO_BIN_EXE_byzmtl");

/// The repository root.
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The image the test builds and removes again.
const IMAGE: &str = "byzmtl:test";

/// The default topology.
const DEFAULT_TOPOLOGY: &str = "deploy/topologies/compose.toml";

/// The never-started node that paces the test networks.
const PACER: &str = "pacer";

#[test]
fn checked_in_files_are_up_to_date() {
    let files = [
        ("docker-compose.yml", &[][..]),
        ("deploy/swarm/byzmtl-stack.yml", &["--swarm"][..]),
        ("deploy/k8s/byzmtl.yaml", &["--kubernetes"][..]),
    ];
    for (file, flags) in files {
        let mut args = vec!["compose", DEFAULT_TOPOLOGY, "-o", file, "--check"];
        args.extend(flags);
        let out = run_in(Path::new(ROOT), CLI_BIN, &args);
        assert!(
            out.status.success(),
            "{file} is not what `byzmtl {}` writes (run it without --check):\n{}",
            args[..4].join(" "),
            text(&out)
        );
    }

    // The tools that read the files accept them (no engine needed).
    let root = Path::new(ROOT);
    if let Some(compose) = compose_tool() {
        let mut args = compose.clone();
        args.extend(["-f", "docker-compose.yml", "config", "-q"].map(String::from));
        let out = run_in(root, &args[0], &args[1..]);
        assert!(out.status.success(), "compose config: {}", text(&out));
    } else {
        println!("no docker compose tool: docker-compose.yml not validated");
    }
    if docker_cli_works() {
        let args = ["stack", "config", "-c", "deploy/swarm/byzmtl-stack.yml"];
        let out = run_in(root, "docker", &args);
        assert!(out.status.success(), "docker stack config: {}", text(&out));
    }
}

#[test]
fn docker_deployments() {
    if let Err(why) = docker_engine() {
        println!("skipping the Docker tests: no Docker engine here ({why})");
        return;
    }
    let Some(compose) = compose_tool() else {
        println!("skipping the Docker tests: neither `docker compose` nor `docker-compose` works");
        return;
    };
    let _lock = EngineLock::take();
    let started = Instant::now();

    let image = build_image();
    println!("image built in {:.0?}", started.elapsed());

    converge(&compose);
    println!("converge done at {:.0?}", started.elapsed());
    kill_one_node(&compose);
    println!("kill done at {:.0?}", started.elapsed());
    swarm();
    println!("swarm done at {:.0?}", started.elapsed());
    drop(image);
}

// === scenarios ===

/// The default network converges, and is fully removed afterwards.
fn converge(compose: &[String]) {
    let rounds = 150;
    let net = TestNetwork::new("converge", compose, rounds);
    net.up();
    net.wait_healthy();

    // From the host, through the published port: the honest node with the most Byzantine
    // neighbours comes to filter every one of them out, with weight 0. Early on a Byzantine
    // model can look better than a node's own, which starts far from its target.
    let (watched, byzantine) = net.most_exposed_honest_node();
    let shut_out = |state: &Value| {
        let neighbours = state["neighbours"].as_array().cloned().unwrap_or_default();
        byzantine.iter().all(|id| {
            neighbours.iter().any(|n| {
                n["nodeId"] == id.as_str()
                    && n["filtered"] == true
                    && n["weight"].as_f64().unwrap_or(0.0) == 0.0
            })
        })
    };
    let what = format!("{watched} to filter out {byzantine:?}");
    let state = net.wait_for_state(&watched, &what, shut_out);
    println!(
        "{watched} at round {} gives its Byzantine neighbours {byzantine:?} weight 0",
        state["round"]
    );

    // The run finishes, every node exits 0, and every honest node has converged.
    let exits = net.wait_all_exited(Duration::from_secs(120));
    assert!(exits.values().all(|&c| c == 0), "exit codes: {exits:?}");
    for id in net.honest_ids() {
        let losses = net.losses(&id);
        assert_eq!(
            losses.len() as u64,
            rounds,
            "{id} ran {} rounds",
            losses.len()
        );
        let last = mean(&losses[losses.len() - 50..]);
        println!("{id}: mean loss over the last 50 rounds {last:.4}");
        assert!(
            last < 1.0,
            "{id} did not converge: last-50 mean loss {last}"
        );
    }
    net.down_and_check_clean();
}

/// An honest node is killed mid-run; the others keep their pace and finish.
fn kill_one_node(compose: &[String]) {
    let rounds = 120;
    let net = TestNetwork::new("kill", compose, rounds);
    net.up();
    net.wait_healthy();

    let (victim, _) = net.most_exposed_honest_node();
    let state = net.wait_for_round(&victim, 50);
    let killed_at = state["round"].as_str().and_then(|r| r.parse::<u64>().ok());
    net.docker(&["kill", &net.container(&victim)]);
    println!("killed {victim} after its round {killed_at:?}");

    let exits = net.wait_all_exited(Duration::from_secs(90));
    for (id, code) in &exits {
        let expected = if *id == victim { 137 } else { 0 };
        assert_eq!(*code, expected, "{id} exited with {code}");
    }
    let victim_rounds = net.losses(&victim).len() as u64;
    assert!(victim_rounds < rounds, "{victim} ran all its rounds");

    // Every other honest node ran every round, at the same pace before and after the kill,
    // and its neighbours of the victim saw it time out from then on.
    let adjacency = net.topology.adjacency();
    let victim_index = net.index(&victim);
    for id in net.honest_ids().into_iter().filter(|id| *id != victim) {
        let records = net.records(&id);
        assert_eq!(
            records.len() as u64,
            rounds,
            "{id} ran {} rounds",
            records.len()
        );
        let took = |r: &Value| {
            ["adapt_ms", "gather_ms", "combine_ms"]
                .iter()
                .map(|k| r[k].as_f64().unwrap_or(0.0))
                .sum::<f64>()
        };
        let cut = victim_rounds as usize + 2;
        let before: Vec<f64> = records[1..victim_rounds as usize]
            .iter()
            .map(took)
            .collect();
        let after: Vec<f64> = records[cut..].iter().map(took).collect();
        let (before, after) = (mean(&before), mean(&after));
        println!("{id}: {before:.0} ms a round before the kill, {after:.0} ms after");
        assert!(
            after < before * 1.5 + 20.0,
            "{id} slowed down after the kill: {before:.0} ms, then {after:.0} ms a round"
        );
        if adjacency[net.index(&id)].contains(&victim_index) {
            let missed = records[cut..]
                .iter()
                .filter(|r| {
                    let named = |key: &str| {
                        r[key]
                            .as_array()
                            .is_some_and(|ids| ids.iter().any(|i| *i == *victim))
                    };
                    named("timeouts") || named("rejected")
                })
                .count();
            assert_eq!(
                missed,
                records.len() - cut,
                "{id} did not time out on {victim}"
            );
        }
    }
    net.down_and_check_clean();
}

/// The default network as a stack on a single-node swarm.
fn swarm() {
    let Some(swarm) = Swarm::join() else {
        return;
    };
    let dir = Scratch::new("swarm");
    let topology = dir.path.join("net.toml");
    let mut loaded = load(&Path::new(ROOT).join(DEFAULT_TOPOLOGY));
    loaded.rounds = 150;
    let text = loaded.to_toml().unwrap_or_default();
    std::fs::write(&topology, text).unwrap_or_else(|e| panic!("cannot write {topology:?}: {e}"));
    let results = dir.results();
    let base = free_ports(loaded.nodes.len(), "0.0.0.0");
    let stack_file = dir.path.join("stack.yml");
    generate(&topology, &stack_file, &results, base, &["--swarm"]);

    let stack = format!("byzmtl-test-{}", std::process::id());
    let deployed = swarm.deploy(&stack, &stack_file);
    let label = format!("label=com.docker.stack.namespace={stack}");

    // Every node's task runs, finishes and exits 0.
    let deadline = Instant::now() + Duration::from_secs(240);
    let exits = loop {
        let ids = docker_out(&["ps", "-aq", "--filter", &label]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        let states: Vec<(String, bool, i64)> = ids
            .iter()
            .map(|c| {
                let s = docker_out(&[
                    "inspect",
                    "-f",
                    "{{index .Config.Labels \"byzmtl.node\"}} {{.State.Running}} {{.State.ExitCode}}",
                    c,
                ]);
                let mut parts = s.split_whitespace();
                let id = parts.next().unwrap_or_default().to_string();
                let running = parts.next() == Some("true");
                let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
                (id, running, code)
            })
            .collect();
        if states.len() == loaded.nodes.len() && states.iter().all(|s| !s.1) {
            break states;
        }
        assert!(
            Instant::now() < deadline,
            "the stack did not finish: {states:?}\n{}",
            docker_out(&["stack", "ps", "--no-trunc", &stack])
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(exits.iter().all(|e| e.2 == 0), "exit codes: {exits:?}");
    println!("{}", docker_out(&["stack", "ps", &stack]));

    for node in loaded.nodes.iter().filter(|n| n.role == RoleKind::Honest) {
        let losses = losses_in(&results, &node.id);
        assert_eq!(losses.len() as u64, loaded.rounds, "{} rounds", node.id);
        let last = mean(&losses[losses.len() - 50..]);
        assert!(
            last < 1.0,
            "{} did not converge on the swarm: {last}",
            node.id
        );
    }
    println!("swarm: every honest node converged");
    deployed.remove();
}

// === the test networks ===

/// The default network with the pacer, as a compose project of its own.
struct TestNetwork {
    compose: Vec<String>,
    project: String,
    file: PathBuf,
    topology: Topology,
    base_port: u16,
    results: PathBuf,
    dir: Scratch,
    done: std::cell::Cell<bool>,
}

impl TestNetwork {
    fn new(name: &str, compose: &[String], rounds: u64) -> Self {
        let dir = Scratch::new(name);
        let mut topology = load(&Path::new(ROOT).join(DEFAULT_TOPOLOGY));
        topology.rounds = rounds;
        topology.round_deadline_ms = 100;
        topology.startup_grace_ms = 10_000;

        // The pacer sits in the middle, within the radius of everyone. Without the cap the
        // other edges stay those of the default network.
        if let Edges::Geometric { max_neighbours, .. } = &mut topology.edges {
            *max_neighbours = None;
        }
        let mut pacer: NodeSpec = topology.nodes[0].clone();
        pacer.id = PACER.into();
        pacer.address = format!("{PACER}:7000");
        pacer.position = Some([0.8, 0.8]);
        topology.nodes.push(pacer);
        let path = dir.path.join("net.toml");
        let text = topology.to_toml().unwrap_or_default();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));

        let results = dir.results();
        let base_port = free_ports(topology.nodes.len(), "127.0.0.1");
        let file = dir.path.join("docker-compose.yml");
        generate(&path, &file, &results, base_port, &[]);
        Self {
            compose: compose.to_vec(),
            project: format!("byzmtl-test-{}-{name}", std::process::id()),
            file,
            topology,
            base_port,
            results,
            dir,
            done: std::cell::Cell::new(false),
        }
    }

    /// Starts every node but the pacer.
    fn up(&self) {
        let mut args = vec!["up", "-d", "--no-build"];
        let ids = self.started_ids();
        args.extend(ids.iter().map(String::as_str));
        let out = self.compose_run(&args);
        assert!(out.status.success(), "compose up: {}", text(&out));
    }

    fn compose_run(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = self.compose[1..].to_vec();
        let file = self.file.display().to_string();
        all.extend(["-f", &file, "-p", &self.project].map(String::from));
        all.extend(args.iter().map(|a| a.to_string()));
        run_in(&self.dir.path, &self.compose[0], &all)
    }

    fn docker(&self, args: &[&str]) -> String {
        docker_out(args)
    }

    fn started_ids(&self) -> Vec<String> {
        let ids = self.topology.nodes.iter().map(|n| n.id.clone());
        ids.filter(|id| id != PACER).collect()
    }

    fn honest_ids(&self) -> Vec<String> {
        let honest = self
            .topology
            .nodes
            .iter()
            .filter(|n| n.role == RoleKind::Honest);
        honest
            .map(|n| n.id.clone())
            .filter(|id| id != PACER)
            .collect()
    }

    fn index(&self, id: &str) -> usize {
        self.topology.index_of(id).unwrap_or(usize::MAX)
    }

    /// The container of node `id`, by the labels compose and `byzmtl compose` put on it.
    fn container(&self, id: &str) -> String {
        let project = format!("label=com.docker.compose.project={}", self.project);
        let node = format!("label=byzmtl.node={id}");
        let out = docker_out(&["ps", "-aq", "--filter", &project, "--filter", &node]);
        let container = out
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(!container.is_empty(), "no container for {id}");
        container
    }

    /// The honest node with the most Byzantine neighbours, and those neighbours.
    fn most_exposed_honest_node(&self) -> (String, Vec<String>) {
        let adjacency = self.topology.adjacency();
        let byzantine_of = |i: usize| -> Vec<String> {
            adjacency[i]
                .iter()
                .map(|&l| &self.topology.nodes[l])
                .filter(|n| n.role == RoleKind::Byzantine)
                .map(|n| n.id.clone())
                .collect()
        };
        let best = self
            .honest_ids()
            .into_iter()
            .map(|id| {
                let b = byzantine_of(self.index(&id));
                (id, b)
            })
            .max_by_key(|(_, b)| b.len());
        let best = best.unwrap_or_default();
        assert!(
            !best.1.is_empty(),
            "no honest node has a Byzantine neighbour"
        );
        best
    }

    /// Waits until every started container reports `healthy`.
    fn wait_healthy(&self) {
        let containers: Vec<(String, String)> = self
            .started_ids()
            .into_iter()
            .map(|id| {
                let c = self.container(&id);
                (id, c)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let states: BTreeMap<&str, String> = containers
                .iter()
                .map(|(id, c)| {
                    let s = docker_out(&["inspect", "-f", "{{.State.Health.Status}}", c]);
                    (id.as_str(), s.trim().to_string())
                })
                .collect();
            if states.values().all(|s| s == "healthy") {
                println!("{}: all {} nodes healthy", self.project, states.len());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every node turned healthy: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Reads node `id`'s state with grpcurl through its published port until it has finished
    /// round `round`, and returns it.
    fn wait_for_round(&self, id: &str, round: i64) -> Value {
        let what = format!("{id} to finish round {round}");
        self.wait_for_state(id, &what, |state| {
            let done = state["round"].as_str().and_then(|r| r.parse::<i64>().ok());
            done.is_some_and(|r| r >= round)
        })
    }

    /// Reads node `id`'s state with grpcurl through its published port until `condition`
    /// holds, and returns it.
    fn wait_for_state(&self, id: &str, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        let port = self.base_port + self.index(id) as u16;
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = get_state(&address);
            if let Some(state) = state.as_ref().filter(|s| condition(s)) {
                return state.clone();
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}; last state: {state:#?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until every started container has exited; their exit codes by node id.
    fn wait_all_exited(&self, timeout: Duration) -> BTreeMap<String, i64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut exits = BTreeMap::new();
            let mut running = Vec::new();
            for id in self.started_ids() {
                let c = self.container(&id);
                let s = docker_out(&[
                    "inspect",
                    "-f",
                    "{{.State.Running}} {{.State.ExitCode}}",
                    &c,
                ]);
                match s.split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["false", code] => {
                        exits.insert(id, code.parse().unwrap_or(-1));
                    }
                    _ => running.push(id),
                }
            }
            if running.is_empty() {
                return exits;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}: {running:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn records(&self, id: &str) -> Vec<Value> {
        records_in(&self.results, id)
    }

    fn losses(&self, id: &str) -> Vec<f64> {
        losses_in(&self.results, id)
    }

    /// `down -v`, then checks that no container, network or volume of the project is left.
    fn down_and_check_clean(&self) {
        self.done.set(true);
        let out = self.compose_run(&["down", "-v", "--remove-orphans"]);
        assert!(out.status.success(), "compose down: {}", text(&out));
        let label = format!("label=com.docker.compose.project={}", self.project);
        for what in [
            &["ps", "-aq"][..],
            &["network", "ls", "-q"],
            &["volume", "ls", "-q"],
        ] {
            let mut args = what.to_vec();
            args.extend(["--filter", &label]);
            let left = docker_out(&args);
            assert!(left.trim().is_empty(), "left behind ({what:?}): {left}");
        }
        println!("{}: down -v left nothing behind", self.project);
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.compose_run(&["logs", "--no-color", "--tail", "15"]);
            eprintln!(
                "--- last log lines of {} ---\n{}",
                self.project,
                text(&logs)
            );
        }
        if !self.done.get() {
            self.compose_run(&["down", "-v", "--remove-orphans"]);
        }
    }
}

// === swarm ===

/// A single-node swarm: the engine's own if it is a manager already, or one made for the
/// test and left again when this is dropped.
struct Swarm {
    created: bool,
    gwbridge_existed: bool,
}

impl Swarm {
    /// Joins or makes a swarm; `None` (with a message) if the engine is in a swarm that this
    /// test should not deploy to.
    fn join() -> Option<Self> {
        let state = docker_out(&["info", "-f", "{{.Swarm.LocalNodeState}}"]);
        let gwbridge_existed =
            !docker_out(&["network", "ls", "-q", "-f", "name=^docker_gwbridge$"])
                .trim()
                .is_empty();
        match state.trim() {
            "inactive" => {
                let out = run_in(
                    Path::new(ROOT),
                    "docker",
                    &["swarm", "init", "--advertise-addr", "127.0.0.1"],
                );
                assert!(out.status.success(), "docker swarm init: {}", text(&out));
                println!("made a single-node swarm on 127.0.0.1");
                Some(Self {
                    created: true,
                    gwbridge_existed,
                })
            }
            other => {
                let nodes = docker_out(&["info", "-f", "{{.Swarm.Nodes}}"]);
                if other == "active" && nodes.trim() == "1" {
                    Some(Self {
                        created: false,
                        gwbridge_existed: true,
                    })
                } else {
                    println!(
                        "skipping the swarm scenario: this engine is in a swarm ({other}, \
                         {} nodes) that the test did not make",
                        nodes.trim()
                    );
                    None
                }
            }
        }
    }

    fn deploy<'a>(&'a self, stack: &str, file: &Path) -> Stack<'a> {
        let file = file.display().to_string();
        let args = [
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            &file,
            stack,
        ];
        let out = run_in(Path::new(ROOT), "docker", &args);
        assert!(out.status.success(), "docker stack deploy: {}", text(&out));
        println!("docker stack deploy:\n{}", text(&out));
        Stack {
            _swarm: self,
            name: stack.to_string(),
            removed: std::cell::Cell::new(false),
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        let out = run_in(Path::new(ROOT), "docker", &["swarm", "leave", "--force"]);
        println!("docker swarm leave --force: {}", text(&out).trim());
        if !self.gwbridge_existed {
            docker_out(&["network", "rm", "docker_gwbridge"]);
        }
    }
}

/// A deployed stack, removed when dropped.
struct Stack<'a> {
    _swarm: &'a Swarm,
    name: String,
    removed: std::cell::Cell<bool>,
}

impl Stack<'_> {
    /// Removes the stack and waits until none of its containers and networks is left.
    fn remove(&self) {
        self.removed.set(true);
        docker_out(&["stack", "rm", &self.name]);
        let label = format!("label=com.docker.stack.namespace={}", self.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = docker_out(&["ps", "-aq", "--filter", &label])
                + &docker_out(&["network", "ls", "-q", "--filter", &label])
                + &docker_out(&["config", "ls", "-q", "--filter", &label]);
            if left.trim().is_empty() {
                println!("docker stack rm {}: nothing left", self.name);
                return;
            }
            if Instant::now() > deadline {
                println!("docker stack rm {}: still left: {left}", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Stack<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = docker_out(&["stack", "ps", "--no-trunc", &self.name]);
            eprintln!("--- tasks of {} ---\n{logs}", self.name);
        }
        if !self.removed.get() {
            self.remove();
        }
    }
}

// === the image ===

/// The test image, removed again when dropped.
struct Image;

/// Builds the image offline from the test binaries: deploy/docker-build.sh makes the Debian
/// base image first if it is missing (which needs root and the Debian archive, once).
fn build_image() -> Image {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_byzmtl-node"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let script = Path::new(ROOT).join("deploy/docker-build.sh");
    let out = Command::new(&script)
        .args(["--bin-dir", &bin_dir.display().to_string(), "--strip"])
        .env("BYZMTL_IMAGE", IMAGE)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script:?}: {e}"));
    assert!(out.status.success(), "docker-build.sh: {}", text(&out));
    print!("{}", String::from_utf8_lossy(&out.stderr));
    Image
}

impl Drop for Image {
    fn drop(&mut self) {
        docker_out(&["rmi", IMAGE]);
    }
}

// === helpers ===

/// A scratch folder, removed when dropped; the results folder inside it is writable by the
/// image's user (UID 10001).
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("byzmtl-docker-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&path).ok();
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {path:?}: {e}"));
        Self { path }
    }

    fn results(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let results = self.path.join("results");
        std::fs::create_dir_all(&results).ok();
        std::fs::set_permissions(&results, std::fs::Permissions::from_mode(0o777)).ok();
        results
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.path).ok();
    }
}

/// Serializes the Docker tests of concurrent test processes on this machine.
struct EngineLock {
    _file: std::fs::File,
}

impl EngineLock {
    fn take() -> Self {
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join("byzmtl-docker-tests.lock");
        let file = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("cannot create the lock file {path:?}: {e}"));
        // SAFETY: flock on a file descriptor that `file` keeps open; the lock goes with it.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "cannot lock {path:?}");
        Self { _file: file }
    }
}

/// Runs `byzmtl compose` for `topology` into `output`, on the test image and ports, with
/// the metrics bind-mounted from `results`.
fn generate(topology: &Path, output: &Path, results: &Path, base: u16, flags: &[&str]) {
    let (topology, output) = (topology.display().to_string(), output.display().to_string());
    let (results, base) = (results.display().to_string(), base.to_string());
    let mut args = vec![
        "compose",
        &topology,
        "-o",
        &output,
        "--image",
        IMAGE,
        "--results",
        &results,
        "--base-port",
        &base,
        "--no-build",
    ];
    args.extend(flags);
    let out = run_in(Path::new(ROOT), CLI_BIN, &args);
    assert!(out.status.success(), "byzmtl compose: {}", text(&out));
}

fn load(path: &Path) -> Topology {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    Topology::from_toml(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The first of `n` consecutive ports that are free on `host`, away from the ephemeral range.
fn free_ports(n: usize, host: &str) -> u16 {
    let start = 20_000 + (std::process::id() % 200) as u16 * 40;
    (0..250)
        .map(|k| 20_000 + (start - 20_000 + k * 40) % 10_000)
        .find(|&base| {
            let listeners: Vec<_> = (0..n as u16)
                .map_while(|i| std::net::TcpListener::bind((host, base + i)).ok())
                .collect();
            listeners.len() == n
        })
        .unwrap_or_else(|| panic!("no {n} free consecutive ports"))
}

fn records_in(results: &Path, id: &str) -> Vec<Value> {
    let path = results.join(format!("{id}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path:?}: {e}: {l}")))
        .collect()
}

fn losses_in(results: &Path, id: &str) -> Vec<f64> {
    let records = records_in(results, id);
    records
        .iter()
        .map(|r| r["loss"].as_f64().unwrap_or(f64::NAN))
        .collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// A node's state, read with grpcurl through server reflection as an operator would, or with
/// this crate's client where grpcurl is not installed.
fn get_state(address: &str) -> Option<Value> {
    if find_on_path("grpcurl").is_some() {
        let args = [
            "-plaintext",
            "-max-time",
            "5",
            address,
            "byzmtl.v1.Peer/GetState",
        ];
        let out = run_in(Path::new(ROOT), "grpcurl", &args);
        return out
            .status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let state = runtime
        .block_on(byzmtl::status::get_state(address, Duration::from_secs(5)))
        .ok()?;
    let neighbours: Vec<Value> = state
        .neighbours
        .iter()
        .map(|n| {
            serde_json::json!({ "nodeId": n.node_id, "weight": n.weight, "filtered": n.filtered })
        })
        .collect();
    Some(serde_json::json!({
        "round": state.round.to_string(),
        "neighbours": neighbours,
    }))
}

/// `docker info` works: an engine answers.
fn docker_engine() -> Result<(), String> {
    let out = Command::new("docker").args(["info"]).output();
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(format!("cannot run docker: {e}")),
    }
}

fn docker_cli_works() -> bool {
    Command::new("docker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `docker compose` (v2) where it works, else `docker-compose` (v1).
fn compose_tool() -> Option<Vec<String>> {
    let works = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&["docker", "compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if works(&["docker-compose", "version"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

fn run_in<S: AsRef<std::ffi::OsStr>>(dir: &Path, program: &str, args: &[S]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs docker; its standard output, or empty if it failed.
fn docker_out(args: &[&str]) -> String {
    let out = run_in(Path::new(ROOT), "docker", args);
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::new()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
