//! Container deployments of a topology: a docker-compose file, a Docker Swarm stack file, and
//! Kubernetes manifests.
//!
//! Every node becomes one container running `byzmtl-node` from the image. Inside a container
//! network a node is reached by its name, so the topology is rewritten for it: each node
//! advertises `<id>:7000` and binds `0.0.0.0:7000`, and writes its metrics file under
//! `/var/lib/byzmtl`, where a volume (or a bind-mounted host folder) keeps it. Compose and
//! Swarm keep the node ids and use them as service names; Kubernetes names the pods of a
//! StatefulSet `<name>-<ordinal>`, so there the node ids become `<name>-0`, `<name>-1`, ... in
//! topology order, and each pod reads its id from its own name.
//!
//! - [`Target::Compose`]: one service per node, the topology bind-mounted, each node's gRPC
//!   port published on the host at `base_port + index`, a health check through the gRPC
//!   health service, and a `build:` section so that `docker compose up --build` builds the
//!   image from source.
//! - [`Target::Swarm`]: the same services for `docker stack deploy`: the topology travels as a
//!   swarm config (so it reaches every host), service names resolve straight to their one
//!   container (`endpoint_mode: dnsrr`, no virtual IP), ports are published on the host that
//!   runs the node (`mode: host`), and nothing is built.
//! - [`Target::Kubernetes`]: a ConfigMap with the topology, a headless Service that gives
//!   every pod a stable DNS name (`<name>-3.<name>`), and a StatefulSet of one pod per node.
//!
//! The YAML is written by a small emitter at the end of this file that quotes every string
//! that YAML could read as anything but that string.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::topology::{Edges, Overrides, RoleKind, Topology, TopologyError};

/// The port every node binds inside its container.
pub const PEER_PORT: u16 = 7000;

/// The port a node serves Prometheus metrics on inside its container, if its topology entry
/// asks for metrics.
pub const METRICS_PORT: u16 = 9100;

/// Where the topology file appears inside a container.
pub const TOPOLOGY_MOUNT: &str = "/etc/byzmtl/net.toml";

/// Where nodes write their metrics files inside a container: the image's working folder,
/// owned by its non-root user.
pub const RESULTS_MOUNT: &str = "/var/lib/byzmtl";

/// The image every generated file runs.
pub const DEFAULT_IMAGE: &str = "byzmtl:latest";

/// The first host port published for node gRPC ports.
pub const DEFAULT_BASE_PORT: u16 = 17000;

/// The first host port published for node metrics ports.
pub const DEFAULT_METRICS_BASE_PORT: u16 = 19100;

/// The Dockerfile that builds the image from source, relative to the repository root.
pub const DOCKERFILE: &str = "deploy/Dockerfile";

/// Everything that can go wrong while writing a deployment.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The topology file is unreadable or invalid.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A node id cannot serve as a host name in a container network.
    #[error(
        "node id `{0}` cannot be a container host name: use at most 63 lower-case letters, \
         digits and `-`, starting and ending with a letter or digit"
    )]
    IdNotHostName(String),
    /// A Kubernetes name is not a DNS label, or leaves no room for the pod ordinals.
    #[error(
        "name `{0}` is not usable for Kubernetes: use at most 50 lower-case letters, digits \
         and `-`, starting with a letter and ending with a letter or digit"
    )]
    BadKubernetesName(String),
    /// A published port would be above 65535.
    #[error("node `{node}` would be published on port {port}, above 65535: lower the base port")]
    PortOutOfRange { node: String, port: u32 },
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    /// `--check` found files that differ from what would be written.
    #[error("out of date (regenerate without --check): {}", list(.0))]
    Stale(Vec<PathBuf>),
}

fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// What to deploy on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// `docker compose up` on one machine.
    #[default]
    Compose,
    /// `docker stack deploy` on a Docker Swarm.
    Swarm,
    /// `kubectl apply` on a Kubernetes cluster.
    Kubernetes,
}

/// How to build the image from source, as the compose file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// The build context (the repository root), relative to the compose file's folder.
    pub context: String,
    /// The Dockerfile, relative to the context.
    pub dockerfile: String,
}

impl Build {
    /// The build section for a compose file at `output` when `repository` is the repository
    /// root, if `repository` holds the Dockerfile.
    pub fn from_repository(repository: &Path, output: &Path) -> Option<Self> {
        if !repository.join(DOCKERFILE).is_file() {
            return None;
        }
        Some(Self {
            context: relative_to_folder_of(output, repository),
            dockerfile: DOCKERFILE.to_string(),
        })
    }
}

/// The choices a deployment file leaves open.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// What to deploy on.
    pub target: Target,
    /// The image every node runs.
    pub image: String,
    /// The host address published ports bind (compose only: Swarm publishes on every
    /// address of the node's host).
    pub host_ip: String,
    /// The host port of the first node's gRPC port; node `i` gets `base_port + i`.
    pub base_port: u16,
    /// The host port of the first node's metrics port, for nodes that serve metrics.
    pub metrics_base_port: u16,
    /// A host folder to bind-mount for the metrics files, as the compose file names it;
    /// without it they go to the named volume `results`.
    pub results: Option<String>,
    /// How to build the image (compose only).
    pub build: Option<Build>,
    /// Kubernetes: the name of the StatefulSet, its Service and ConfigMap, and so the prefix
    /// of the node ids.
    pub name: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            target: Target::Compose,
            image: DEFAULT_IMAGE.to_string(),
            host_ip: "127.0.0.1".to_string(),
            base_port: DEFAULT_BASE_PORT,
            metrics_base_port: DEFAULT_METRICS_BASE_PORT,
            results: None,
            build: None,
            name: "byzmtl".to_string(),
        }
    }
}

/// `byzmtl compose`: its flags, parsed by the binary and carried out by [`run`].
#[derive(Debug, Clone, clap::Args)]
pub struct ComposeArgs {
    /// The topology file.
    pub topology: PathBuf,
    /// The file to write. A topology that needs rewriting for containers is written beside
    /// it, as `<stem>.topology.toml`.
    #[arg(long, short, default_value = "docker-compose.yml")]
    pub output: PathBuf,
    /// Write a stack file for `docker stack deploy` on a Docker Swarm.
    #[arg(long, conflicts_with = "kubernetes")]
    pub swarm: bool,
    /// Write Kubernetes manifests: a ConfigMap, a headless Service and a StatefulSet. Node ids
    /// become `<name>-<ordinal>`, in topology order.
    #[arg(long)]
    pub kubernetes: bool,
    /// The image the nodes run.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Host port of the first node's gRPC port; node i is published on BASE_PORT + i.
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// Host port of the first node's metrics port, for nodes whose entry sets `metrics`.
    #[arg(long, default_value_t = DEFAULT_METRICS_BASE_PORT)]
    pub metrics_base_port: u16,
    /// The host address published ports bind (compose only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host_ip: String,
    /// Bind-mount this host folder (writable by UID 10001) for the metrics files, instead of
    /// the named volume `results`. A relative path is relative to the output's folder.
    #[arg(long, value_name = "DIR")]
    pub results: Option<String>,
    /// Leave out the `build:` section. Without this flag the compose file builds from the
    /// current folder when it holds deploy/Dockerfile (run from the repository root).
    #[arg(long)]
    pub no_build: bool,
    /// Kubernetes: the StatefulSet's name, which prefixes the node ids.
    #[arg(long, default_value = "byzmtl")]
    pub name: String,
    /// Write nothing; fail if the files on disk differ from what would be written.
    #[arg(long)]
    pub check: bool,
}

/// Carries out `byzmtl compose`: writes (or, with `--check`, compares) the deployment files
/// and returns their paths.
pub fn run(args: &ComposeArgs) -> Result<Vec<PathBuf>, ComposeError> {
    let target = match (args.swarm, args.kubernetes) {
        (_, true) => Target::Kubernetes,
        (true, false) => Target::Swarm,
        (false, false) => Target::Compose,
    };
    let build = match (target, args.no_build) {
        (Target::Compose, false) => Build::from_repository(Path::new("."), &args.output),
        _ => None,
    };
    let options = Options {
        target,
        image: args.image.clone(),
        host_ip: args.host_ip.clone(),
        base_port: args.base_port,
        metrics_base_port: args.metrics_base_port,
        results: args.results.clone(),
        build,
        name: args.name.clone(),
    };
    let plan = plan(&args.topology, &args.output, &options)?;
    if args.check {
        let stale = plan.stale()?;
        if !stale.is_empty() {
            return Err(ComposeError::Stale(stale));
        }
    } else {
        plan.write()?;
    }
    Ok(plan.files.into_iter().map(|(path, _)| path).collect())
}

/// The files a deployment consists of, with their contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Each file's path and text; the deployment file comes first.
    pub files: Vec<(PathBuf, String)>,
}

impl Plan {
    /// Writes every file, creating folders as needed.
    pub fn write(&self) -> Result<(), ComposeError> {
        for (path, text) in &self.files {
            let write_error = |source| ComposeError::Write {
                path: path.display().to_string(),
                source,
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(write_error)?;
            }
            std::fs::write(path, text).map_err(write_error)?;
        }
        Ok(())
    }

    /// The files whose contents on disk differ from the plan's, missing ones included.
    pub fn stale(&self) -> Result<Vec<PathBuf>, ComposeError> {
        let mut stale = Vec::new();
        for (path, text) in &self.files {
            match std::fs::read_to_string(path) {
                Ok(on_disk) if on_disk == *text => {}
                Ok(_) => stale.push(path.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => stale.push(path.clone()),
                Err(source) => {
                    return Err(ComposeError::Read {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
        Ok(stale)
    }
}

/// Plans the deployment of the topology file `topology_path` into the file `output`.
///
/// The topology is read from the file alone: `BYZMTL_*` variables do not leak into a file
/// that is meant to be checked in. For Compose and Swarm, a topology that is already written
/// for containers (see [`containerize`]) is mounted as it is; any other is rewritten and
/// planned beside `output` as `<stem>.topology.toml`.
pub fn plan(topology_path: &Path, output: &Path, options: &Options) -> Result<Plan, ComposeError> {
    let topology = Topology::load_with_env(topology_path, &HashMap::new(), &Overrides::default())?;
    let source = relative_to_folder_of(output, topology_path);

    if options.target == Target::Kubernetes {
        let text = kubernetes(&topology, &source, options)?;
        return Ok(Plan {
            files: vec![(output.to_path_buf(), text)],
        });
    }

    let containerized = containerize(&topology)?;
    let mut files = Vec::new();
    let mounted = if containerized == topology {
        source.clone()
    } else {
        let stem = output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "docker-compose".into());
        let name = format!("{stem}.topology.toml");
        let header = format!(
            "# The topology {source}, rewritten for containers by `byzmtl compose`: nodes \
             advertise\n# `<id>:{PEER_PORT}`, bind 0.0.0.0:{PEER_PORT} and write metrics to \
             {RESULTS_MOUNT}.\n\n"
        );
        files.push((
            output.with_file_name(&name),
            header + &containerized.to_toml()?,
        ));
        format!("./{name}")
    };
    let text = compose(&containerized, &source, &mounted, options)?;
    files.insert(0, (output.to_path_buf(), text));
    Ok(Plan { files })
}

/// The topology rewritten for a container network where each node's host name is its id:
/// every node advertises `<id>:7000` and binds `0.0.0.0:7000`, serves metrics (if it does)
/// on `0.0.0.0:9100`, and the metrics files go to `/var/lib/byzmtl`.
pub fn containerize(topology: &Topology) -> Result<Topology, ComposeError> {
    let mut out = topology.clone();
    for node in &mut out.nodes {
        if !is_dns_label(&node.id, 63) {
            return Err(ComposeError::IdNotHostName(node.id.clone()));
        }
        node.address = format!("{}:{PEER_PORT}", node.id);
    }
    rewrite_for_containers(&mut out);
    Ok(out)
}

/// The topology rewritten for the StatefulSet `name`: node `i` becomes `<name>-<i>`,
/// reachable at `<name>-<i>.<name>:7000` through the headless Service, and the edges follow
/// the new ids.
pub fn kubernetes_topology(topology: &Topology, name: &str) -> Result<Topology, ComposeError> {
    if !is_dns_label(name, 50) || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(ComposeError::BadKubernetesName(name.to_string()));
    }
    let mut out = topology.clone();
    let renamed: HashMap<String, String> = topology
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.id.clone(), format!("{name}-{i}")))
        .collect();
    for (i, node) in out.nodes.iter_mut().enumerate() {
        node.id = format!("{name}-{i}");
        node.address = format!("{name}-{i}.{name}:{PEER_PORT}");
    }
    if let Edges::List { pairs } = &mut out.edges {
        for end in pairs.iter_mut().flatten() {
            if let Some(new) = renamed.get(end.as_str()) {
                *end = new.clone();
            }
        }
    }
    rewrite_for_containers(&mut out);
    out.validate()?;
    Ok(out)
}

/// Bind addresses and the metrics folder, the same for every container platform.
fn rewrite_for_containers(topology: &mut Topology) {
    for node in &mut topology.nodes {
        node.listen = Some(format!("0.0.0.0:{PEER_PORT}"));
        if node.metrics.is_some() {
            node.metrics = Some(format!("0.0.0.0:{METRICS_PORT}"));
        }
    }
    topology.out_dir = Some(PathBuf::from(RESULTS_MOUNT));
}

/// Whether `s` is a DNS label of at most `max` characters, in lower case.
fn is_dns_label(s: &str, max: usize) -> bool {
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| edge(c) || c == '-')
        && s.starts_with(edge)
        && s.ends_with(edge)
}

/// A host port `base + index`, or an error naming the node.
fn host_port(base: u16, index: usize, node: &str) -> Result<u16, ComposeError> {
    let port = u32::from(base) + index as u32;
    u16::try_from(port).map_err(|_| ComposeError::PortOutOfRange {
        node: node.to_string(),
        port,
    })
}

fn role_label(topology: &Topology, index: usize) -> String {
    match topology.attack_of(index) {
        Some(attack) => format!("byzantine:{}", attack.name()),
        None => "honest".to_string(),
    }
}

// === docker-compose and swarm ===

/// The compose (or stack) file of a containerized topology. `source` names the original
/// topology file and `mounted` the file the containers read, both relative to the compose
/// file's folder.
fn compose(
    topology: &Topology,
    source: &str,
    mounted: &str,
    options: &Options,
) -> Result<String, ComposeError> {
    let swarm = options.target == Target::Swarm;
    let mut services = Vec::new();
    for (i, node) in topology.nodes.iter().enumerate() {
        let mut service = vec![("image".to_string(), Yaml::str(&options.image))];
        if let (false, Some(build)) = (swarm, &options.build) {
            service.push((
                "build".into(),
                Yaml::map([
                    ("context", Yaml::str(&build.context)),
                    ("dockerfile", Yaml::str(&build.dockerfile)),
                ]),
            ));
        }
        service.push((
            "command".into(),
            Yaml::Flow(vec![
                "--topology".into(),
                TOPOLOGY_MOUNT.into(),
                "--id".into(),
                node.id.clone(),
            ]),
        ));
        service.push((
            "labels".into(),
            Yaml::map([
                ("byzmtl.node", Yaml::str(&node.id)),
                ("byzmtl.role", Yaml::str(&role_label(topology, i))),
            ]),
        ));

        // Ports: compose binds one host address; swarm publishes on the host running the
        // node, since its routing mesh cannot reach a service without a virtual IP.
        let mut ports = vec![(host_port(options.base_port, i, &node.id)?, PEER_PORT)];
        if node.metrics.is_some() {
            ports.push((
                host_port(options.metrics_base_port, i, &node.id)?,
                METRICS_PORT,
            ));
        }
        let ports = ports
            .into_iter()
            .map(|(published, target)| {
                if swarm {
                    Yaml::map([
                        ("target", Yaml::Int(target.into())),
                        ("published", Yaml::Int(published.into())),
                        ("protocol", Yaml::str("tcp")),
                        ("mode", Yaml::str("host")),
                    ])
                } else {
                    Yaml::str(&format!("{}:{published}:{target}", options.host_ip))
                }
            })
            .collect();
        service.push(("ports".into(), Yaml::Seq(ports)));

        // The topology: bind-mounted for compose, a swarm config for a stack.
        let results = match &options.results {
            Some(dir) => format!("{dir}:{RESULTS_MOUNT}"),
            None => format!("results:{RESULTS_MOUNT}"),
        };
        if swarm {
            service.push((
                "configs".into(),
                Yaml::Seq(vec![Yaml::map([
                    ("source", Yaml::str("topology")),
                    ("target", Yaml::str(TOPOLOGY_MOUNT)),
                ])]),
            ));
            service.push(("volumes".into(), Yaml::Seq(vec![Yaml::str(&results)])));
        } else {
            let topology = format!("{mounted}:{TOPOLOGY_MOUNT}:ro");
            service.push((
                "volumes".into(),
                Yaml::Seq(vec![Yaml::str(&topology), Yaml::str(&results)]),
            ));
        }

        service.push((
            "healthcheck".into(),
            Yaml::map([
                (
                    "test",
                    Yaml::Flow(vec![
                        "CMD".into(),
                        "byzmtl".into(),
                        "health".into(),
                        format!("127.0.0.1:{PEER_PORT}"),
                    ]),
                ),
                ("interval", Yaml::str("3s")),
                ("timeout", Yaml::str("3s")),
                ("retries", Yaml::Int(3)),
                ("start_period", Yaml::str("10s")),
            ]),
        ));

        // A node that has run its rounds exits 0 and must not start over. Docker's own
        // default is not to restart; Compose v2 and Swarm read the restart policy.
        let mut deploy = Vec::new();
        if swarm {
            deploy.push(("endpoint_mode".to_string(), Yaml::str("dnsrr")));
        }
        deploy.push((
            "restart_policy".into(),
            Yaml::map([("condition", Yaml::str("none"))]),
        ));
        service.push(("deploy".into(), Yaml::Map(deploy)));
        services.push((node.id.clone(), Yaml::Map(service)));
    }

    let mut file = vec![("services".to_string(), Yaml::Map(services))];
    if options.results.is_none() {
        file.push((
            "volumes".into(),
            Yaml::map([("results", Yaml::Map(Vec::new()))]),
        ));
    }
    if swarm {
        file.push((
            "configs".into(),
            Yaml::map([("topology", Yaml::map([("file", Yaml::str(mounted))]))]),
        ));
    }

    let (what, usage) = if swarm {
        (
            "a Docker Swarm stack file",
            "docker stack deploy -c FILE STACK",
        )
    } else {
        ("a docker-compose file", "docker compose up")
    };
    let byzantine: Vec<String> = topology
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| node.role == RoleKind::Byzantine)
        .map(|(i, node)| format!("{} ({})", node.id, role_label(topology, i)))
        .collect();
    let header = format!(
        "# {name}: {nodes} byzmtl nodes as {what}, for `{usage}`.\n\
         #\n\
         # Generated by `byzmtl compose` from the topology\n\
         # {source}: regenerate it rather than edit it.\n\
         # Node i's gRPC port is published on host port {base} + i.\n\
         # Byzantine nodes: {byzantine}.\n\n",
        name = display_name(topology),
        nodes = topology.nodes.len(),
        base = options.base_port,
        byzantine = if byzantine.is_empty() {
            "none".to_string()
        } else {
            byzantine.join(", ")
        },
    );
    Ok(header + &Yaml::Map(file).to_text())
}

fn display_name(topology: &Topology) -> &str {
    if topology.name.is_empty() {
        "network"
    } else {
        &topology.name
    }
}

// === kubernetes ===

/// The Kubernetes manifests of `topology`: a ConfigMap, a headless Service and a StatefulSet.
fn kubernetes(
    topology: &Topology,
    source: &str,
    options: &Options,
) -> Result<String, ComposeError> {
    let name = options.name.as_str();
    let renamed = kubernetes_topology(topology, name)?;
    let manifests = kubernetes_manifests(topology, &renamed, options)?;
    let mut header = format!(
        "# {title}: {nodes} byzmtl nodes as a Kubernetes StatefulSet, for `kubectl apply -f`.\n\
         #\n\
         # Generated by `byzmtl compose --kubernetes` from the topology\n\
         # {source}: regenerate it rather than edit it.\n\
         # Each pod is one node, and its name is its node id:\n",
        title = display_name(topology),
        nodes = topology.nodes.len(),
    );
    for (i, (old, new)) in topology.nodes.iter().zip(&renamed.nodes).enumerate() {
        let role = role_label(topology, i);
        header += &format!("#   {} = {} ({role})\n", new.id, old.id);
    }
    let docs: Vec<String> = manifests.iter().map(Yaml::to_text).collect();
    Ok(header + "---\n" + &docs.join("---\n"))
}

/// The three manifests as YAML trees, so tests can look into them.
fn kubernetes_manifests(
    original: &Topology,
    renamed: &Topology,
    options: &Options,
) -> Result<Vec<Yaml>, ComposeError> {
    let name = options.name.as_str();
    let config_name = format!("{name}-topology");
    let labels = || {
        Yaml::map([
            ("app.kubernetes.io/name", Yaml::str("byzmtl")),
            ("app.kubernetes.io/instance", Yaml::str(name)),
        ])
    };

    // The topology, with the original ids noted next to the new ones.
    let mut topology_text = format!("# Node ids are the pod names of the StatefulSet `{name}`:\n");
    for (old, new) in original.nodes.iter().zip(&renamed.nodes) {
        topology_text += &format!("#   {} = {}\n", new.id, old.id);
    }
    topology_text += "\n";
    topology_text += &renamed.to_toml()?;
    let config_map = Yaml::map([
        ("apiVersion", Yaml::str("v1")),
        ("kind", Yaml::str("ConfigMap")),
        (
            "metadata",
            Yaml::map([("name", Yaml::str(&config_name)), ("labels", labels())]),
        ),
        ("data", Yaml::map([("net.toml", Yaml::str(&topology_text))])),
    ]);

    // Headless, and publishing pods before they are ready: nodes must find each other while
    // they start, and a finished node still serves its last rounds.
    let grpc_port = || {
        Yaml::map([
            ("name", Yaml::str("grpc")),
            ("port", Yaml::Int(PEER_PORT.into())),
            ("targetPort", Yaml::str("grpc")),
        ])
    };
    let service = Yaml::map([
        ("apiVersion", Yaml::str("v1")),
        ("kind", Yaml::str("Service")),
        (
            "metadata",
            Yaml::map([("name", Yaml::str(name)), ("labels", labels())]),
        ),
        (
            "spec",
            Yaml::map([
                ("clusterIP", Yaml::str("None")),
                ("publishNotReadyAddresses", Yaml::Bool(true)),
                ("selector", labels()),
                ("ports", Yaml::Seq(vec![grpc_port()])),
            ]),
        ),
    ]);

    // The pod runs the node, then idles: a StatefulSet restarts any container that exits,
    // which would run the whole network again. A failed node exits with its status.
    let script = format!(
        "trap 'kill -TERM \"$pid\" 2>/dev/null; wait \"$pid\"; exit 0' TERM INT\n\
         byzmtl-node --topology {TOPOLOGY_MOUNT} & pid=$!\n\
         wait \"$pid\" || exit $?\n\
         echo \"node $BYZMTL_ID finished; idling so that it is not run again\"\n\
         while true; do sleep 3600 & pid=$!; wait \"$pid\"; done\n"
    );
    let mut container_ports = vec![Yaml::map([
        ("name", Yaml::str("grpc")),
        ("containerPort", Yaml::Int(PEER_PORT.into())),
    ])];
    if renamed.nodes.iter().any(|n| n.metrics.is_some()) {
        container_ports.push(Yaml::map([
            ("name", Yaml::str("metrics")),
            ("containerPort", Yaml::Int(METRICS_PORT.into())),
        ]));
    }
    let container = Yaml::map([
        ("name", Yaml::str("node")),
        ("image", Yaml::str(&options.image)),
        ("command", Yaml::Flow(vec!["/bin/sh".into(), "-c".into()])),
        ("args", Yaml::Seq(vec![Yaml::str(&script)])),
        (
            "env",
            Yaml::Seq(vec![Yaml::map([
                ("name", Yaml::str("BYZMTL_ID")),
                (
                    "valueFrom",
                    Yaml::map([(
                        "fieldRef",
                        Yaml::map([("fieldPath", Yaml::str("metadata.name"))]),
                    )]),
                ),
            ])]),
        ),
        ("ports", Yaml::Seq(container_ports)),
        (
            "readinessProbe",
            Yaml::map([
                ("grpc", Yaml::map([("port", Yaml::Int(PEER_PORT.into()))])),
                ("periodSeconds", Yaml::Int(5)),
            ]),
        ),
        (
            "resources",
            Yaml::map([(
                "requests",
                Yaml::map([("cpu", Yaml::str("100m")), ("memory", Yaml::str("64Mi"))]),
            )]),
        ),
        (
            "securityContext",
            Yaml::map([
                ("allowPrivilegeEscalation", Yaml::Bool(false)),
                ("readOnlyRootFilesystem", Yaml::Bool(true)),
                (
                    "capabilities",
                    Yaml::map([("drop", Yaml::Flow(vec!["ALL".into()]))]),
                ),
            ]),
        ),
        (
            "volumeMounts",
            Yaml::Seq(vec![
                Yaml::map([
                    ("name", Yaml::str("topology")),
                    ("mountPath", Yaml::str("/etc/byzmtl")),
                    ("readOnly", Yaml::Bool(true)),
                ]),
                Yaml::map([
                    ("name", Yaml::str("results")),
                    ("mountPath", Yaml::str(RESULTS_MOUNT)),
                ]),
            ]),
        ),
    ]);
    let pod = Yaml::map([
        ("metadata", Yaml::map([("labels", labels())])),
        (
            "spec",
            Yaml::map([
                (
                    "securityContext",
                    Yaml::map([
                        ("runAsNonRoot", Yaml::Bool(true)),
                        ("runAsUser", Yaml::Int(10001)),
                        ("runAsGroup", Yaml::Int(10001)),
                        ("fsGroup", Yaml::Int(10001)),
                    ]),
                ),
                ("terminationGracePeriodSeconds", Yaml::Int(15)),
                ("containers", Yaml::Seq(vec![container])),
                (
                    "volumes",
                    Yaml::Seq(vec![
                        Yaml::map([
                            ("name", Yaml::str("topology")),
                            ("configMap", Yaml::map([("name", Yaml::str(&config_name))])),
                        ]),
                        Yaml::map([
                            ("name", Yaml::str("results")),
                            ("emptyDir", Yaml::Map(Vec::new())),
                        ]),
                    ]),
                ),
            ]),
        ),
    ]);
    let stateful_set = Yaml::map([
        ("apiVersion", Yaml::str("apps/v1")),
        ("kind", Yaml::str("StatefulSet")),
        (
            "metadata",
            Yaml::map([("name", Yaml::str(name)), ("labels", labels())]),
        ),
        (
            "spec",
            Yaml::map([
                ("serviceName", Yaml::str(name)),
                ("replicas", Yaml::Int(renamed.nodes.len() as i64)),
                ("podManagementPolicy", Yaml::str("Parallel")),
                ("selector", Yaml::map([("matchLabels", labels())])),
                ("template", pod),
            ]),
        ),
    ]);
    Ok(vec![config_map, service, stateful_set])
}

// === paths ===

/// `target` as a path relative to the folder of the file `file`, with `/` separators and a
/// leading `./` or `../`, as compose files want bind-mount sources.
fn relative_to_folder_of(file: &Path, target: &Path) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let from = absolute(file);
    let from = from.parent().unwrap_or(Path::new("/"));
    let to = absolute(target);
    let normal = |p: &Path| -> Vec<String> {
        let mut parts: Vec<String> = Vec::new();
        for c in p.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    parts.pop();
                }
                _ => {}
            }
        }
        parts
    };
    let (from, to) = (normal(from), normal(&to));
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); from.len() - common];
    parts.extend(to[common..].iter().cloned());
    match parts.first().map(String::as_str) {
        None => ".".to_string(),
        Some("..") => parts.join("/"),
        Some(_) => format!("./{}", parts.join("/")),
    }
}

// === yaml ===

/// A YAML value, written in block style with two-space indents.
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Bool(bool),
    Int(i64),
    /// A string: plain where YAML reads it back as the same string, double-quoted otherwise,
    /// and a literal block (`|`) when it spans lines.
    Str(String),
    Seq(Vec<Yaml>),
    /// A sequence of strings on one line, `["a", "b"]`, every item double-quoted.
    Flow(Vec<String>),
    /// A mapping, in the order given.
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    fn str(s: &str) -> Self {
        Self::Str(s.to_string())
    }

    fn map<const N: usize>(entries: [(&str, Yaml); N]) -> Self {
        Self::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// The value looked up by a path of map keys, for tests.
    #[cfg(test)]
    fn get(&self, path: &[&str]) -> Option<&Yaml> {
        let mut value = self;
        for key in path {
            let Yaml::Map(entries) = value else {
                return None;
            };
            value = &entries.iter().find(|(k, _)| k == key)?.1;
        }
        Some(value)
    }

    /// The document's text, ending in a newline.
    fn to_text(&self) -> String {
        let mut out = String::new();
        match self {
            Yaml::Map(entries) if !entries.is_empty() => write_map(&mut out, entries, 0),
            Yaml::Seq(items) if !items.is_empty() => write_seq(&mut out, items, 0),
            scalar => {
                write_inline(&mut out, scalar, 0);
                out.push('\n');
            }
        }
        out
    }
}

fn write_map(out: &mut String, entries: &[(String, Yaml)], indent: usize) {
    for (i, (key, value)) in entries.iter().enumerate() {
        // The first entry of a map inside a sequence item follows the item's `- `.
        if i > 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&scalar(key));
        out.push(':');
        match value {
            Yaml::Map(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(out, inner, indent + 2);
            }
            Yaml::Seq(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, indent + 2);
            }
            other => {
                out.push(' ');
                write_inline(out, other, indent + 2);
                out.push('\n');
            }
        }
    }
}

fn write_seq(out: &mut String, items: &[Yaml], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        match item {
            Yaml::Map(inner) if !inner.is_empty() => write_map(out, inner, indent + 2),
            Yaml::Seq(inner) if !inner.is_empty() => {
                out.pop();
                out.push('\n');
                write_seq(out, inner, indent + 2);
            }
            other => {
                write_inline(out, other, indent + 2);
                out.push('\n');
            }
        }
    }
}

/// Writes a value that fits after `key: ` or `- `; a block string continues on the
/// following lines, indented by `indent`.
fn write_inline(out: &mut String, value: &Yaml, indent: usize) {
    match value {
        Yaml::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Yaml::Int(n) => out.push_str(&n.to_string()),
        Yaml::Str(s) if is_block(s) => write_block(out, s, indent),
        Yaml::Str(s) => out.push_str(&scalar(s)),
        Yaml::Flow(items) => {
            let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
            out.push('[');
            out.push_str(&items.join(", "));
            out.push(']');
        }
        Yaml::Seq(_) => out.push_str("[]"),
        Yaml::Map(_) => out.push_str("{}"),
    }
}

/// Whether a string is written as a literal block: it spans lines, and every character can
/// stand in a block as itself.
fn is_block(s: &str) -> bool {
    s.contains('\n')
        && s.chars()
            .all(|c| c == '\n' || c == '\t' || !(c.is_control() || c == '\u{feff}'))
        && !s.lines().any(|l| l.ends_with(' ') || l.ends_with('\t'))
}

/// A literal block scalar: `|` with an indentation indicator when the first line starts
/// with a space, and the chomping indicator that keeps the trailing newlines exactly.
fn write_block(out: &mut String, s: &str, indent: usize) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push('|');
    if body.starts_with(' ') || body.starts_with('\n') {
        out.push('2');
    }
    match trailing {
        0 => out.push('-'),
        1 => {}
        _ => out.push('+'),
    }
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&" ".repeat(indent));
            out.push_str(line);
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
}

/// A string as a one-line scalar: plain when YAML (1.1 or 1.2) reads it back as this very
/// string, double-quoted otherwise.
fn scalar(s: &str) -> String {
    if is_plain(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// Plain scalars are kept to a safe subset: they start with a letter, `/`, `_`, `./` or `../`
/// (or are `.` or `..`), hold only letters, digits and `_ . / -`, and are none of the words
/// YAML reads as booleans or null.
fn is_plain(s: &str) -> bool {
    const WORDS: [&str; 11] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf",
    ];
    let relative = s == "." || s == ".." || s.starts_with("./") || s.starts_with("../");
    let first_ok = relative
        || s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '_');
    first_ok
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

/// A double-quoted scalar. JSON's string escapes are all valid in YAML's double quotes.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small network: two honest nodes and a Byzantine one, on a ring.
    const NET: &str = r#"
        name = "tiny"
        rounds = 20
        [edges]
        kind = "list"
        pairs = [["a", "b"], ["b", "z"]]
        [[nodes]]
        id = "a"
        address = "127.0.0.1:7001"
        metrics = "127.0.0.1:9101"
        [[nodes]]
        id = "b"
        address = "127.0.0.1:7002"
        [[nodes]]
        id = "z"
        address = "127.0.0.1:7003"
        role = "byzantine"
    "#;

    fn tiny() -> Topology {
        match Topology::from_toml(NET) {
            Ok(t) => t,
            Err(e) => panic!("test topology: {e}"),
        }
    }

    #[test]
    fn containerize_points_nodes_at_each_other_by_name() {
        let t = containerize(&tiny()).map_err(|e| e.to_string());
        let t = t.as_ref();
        let addresses: Option<Vec<(&str, Option<&str>)>> = t.ok().map(|t| {
            t.nodes
                .iter()
                .map(|n| (n.address.as_str(), n.listen.as_deref()))
                .collect()
        });
        assert_eq!(
            addresses,
            Some(vec![
                ("a:7000", Some("0.0.0.0:7000")),
                ("b:7000", Some("0.0.0.0:7000")),
                ("z:7000", Some("0.0.0.0:7000")),
            ])
        );
        assert_eq!(
            t.ok().map(|t| t.nodes[0].metrics.clone()),
            Some(Some("0.0.0.0:9100".into()))
        );
        assert_eq!(
            t.ok().and_then(|t| t.out_dir.clone()),
            Some(PathBuf::from("/var/lib/byzmtl"))
        );

        // Rewriting twice changes nothing more.
        let again = t.ok().map(|t| containerize(t).ok());
        assert_eq!(again.flatten().as_ref(), t.ok());
    }

    #[test]
    fn ids_that_are_not_host_names_are_refused() {
        for bad in ["Node", "node_1", "-a", "a-", "a.b"] {
            let mut t = tiny();
            t.nodes[0].id = bad.to_string();
            t.edges = Edges::Complete;
            let err = containerize(&t).map(|_| ()).map_err(|e| e.to_string());
            assert!(
                matches!(&err, Err(m) if m.contains(&format!("node id `{bad}`"))),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn compose_file_has_a_service_per_node() {
        let t = containerize(&tiny()).ok();
        let options = Options {
            build: Some(Build {
                context: ".".into(),
                dockerfile: DOCKERFILE.into(),
            }),
            ..Options::default()
        };
        let text = t
            .map(|t| compose(&t, "./net.toml", "./net.toml", &options))
            .and_then(Result::ok)
            .unwrap_or_default();
        let expected_a = r#"services:
  a:
    image: "byzmtl:latest"
    build:
      context: .
      dockerfile: deploy/Dockerfile
    command: ["--topology", "/etc/byzmtl/net.toml", "--id", "a"]
    labels:
      byzmtl.node: a
      byzmtl.role: honest
    ports:
      - "127.0.0.1:17000:7000"
      - "127.0.0.1:19100:9100"
    volumes:
      - "./net.toml:/etc/byzmtl/net.toml:ro"
      - "results:/var/lib/byzmtl"
    healthcheck:
      test: ["CMD", "byzmtl", "health", "127.0.0.1:7000"]
      interval: "3s"
      timeout: "3s"
      retries: 3
      start_period: "10s"
    deploy:
      restart_policy:
        condition: none
  b:
"#;
        assert!(text.contains(expected_a), "{text}");
        assert!(text.contains("# Byzantine nodes: z (byzantine:uniform).\n"));
        assert!(text.contains("      byzmtl.role: \"byzantine:uniform\"\n"));
        assert!(text.contains("      - \"127.0.0.1:17002:7000\"\n"));
        assert!(text.ends_with("volumes:\n  results: {}\n"), "{text}");
    }

    #[test]
    fn stack_file_uses_configs_dnsrr_and_host_ports() {
        let t = containerize(&tiny()).ok();
        let options = Options {
            target: Target::Swarm,
            build: Some(Build {
                context: ".".into(),
                dockerfile: DOCKERFILE.into(),
            }),
            results: Some("/srv/results".into()),
            ..Options::default()
        };
        let text = t
            .map(|t| compose(&t, "./net.toml", "./net.toml", &options))
            .and_then(Result::ok)
            .unwrap_or_default();
        assert!(!text.contains("build:"), "{text}");
        assert!(!text.contains("restart:"), "{text}");
        assert!(
            text.contains(
                "    ports:\n      - target: 7000\n        published: 17001\n        \
                 protocol: tcp\n        mode: host\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "    configs:\n      - source: topology\n        target: /etc/byzmtl/net.toml\n"
        ));
        assert!(text.contains("    volumes:\n      - \"/srv/results:/var/lib/byzmtl\"\n"));
        assert!(text.contains("      endpoint_mode: dnsrr\n"));
        assert!(
            text.ends_with("configs:\n  topology:\n    file: ./net.toml\n"),
            "{text}"
        );
    }

    #[test]
    fn ports_past_65535_are_refused() {
        let t = containerize(&tiny()).ok();
        let options = Options {
            base_port: 65534,
            ..Options::default()
        };
        let err = t.map(|t| compose(&t, "n", "n", &options).map_err(|e| e.to_string()));
        assert_eq!(
            err,
            Some(Err(
                "node `z` would be published on port 65536, above 65535: lower the base port"
                    .into()
            ))
        );
    }

    #[test]
    fn kubernetes_manifests_hang_together() {
        let original = tiny();
        let options = Options {
            target: Target::Kubernetes,
            name: "net".into(),
            ..Options::default()
        };
        let renamed = kubernetes_topology(&original, "net").map_err(|e| e.to_string());
        let docs = renamed
            .as_ref()
            .ok()
            .and_then(|r| kubernetes_manifests(&original, r, &options).ok())
            .unwrap_or_default();
        let kinds: Vec<Option<&Yaml>> = docs.iter().map(|d| d.get(&["kind"])).collect();
        assert_eq!(
            kinds,
            vec![
                Some(&Yaml::str("ConfigMap")),
                Some(&Yaml::str("Service")),
                Some(&Yaml::str("StatefulSet")),
            ]
        );
        let [config_map, service, set] = docs.as_slice() else {
            panic!("three manifests expected, got {}", docs.len());
        };

        // The StatefulSet: one pod per node, named after the headless Service, whose
        // selector picks exactly the pods' labels.
        let spec = |path: &[&str]| set.get(&[&["spec"][..], path].concat()).cloned();
        assert_eq!(spec(&["replicas"]), Some(Yaml::Int(3)));
        assert_eq!(
            spec(&["serviceName"]),
            service.get(&["metadata", "name"]).cloned()
        );
        assert_eq!(
            service.get(&["spec", "clusterIP"]),
            Some(&Yaml::str("None"))
        );
        let pod_labels = spec(&["template", "metadata", "labels"]);
        assert_eq!(spec(&["selector", "matchLabels"]), pod_labels);
        assert_eq!(service.get(&["spec", "selector"]).cloned(), pod_labels);

        // The pod reads the ConfigMap and takes its id from its name.
        let volumes = spec(&["template", "spec", "volumes"]);
        let Some(Yaml::Seq(volumes)) = volumes else {
            panic!("no pod volumes");
        };
        assert_eq!(
            volumes[0].get(&["configMap", "name"]),
            config_map.get(&["metadata", "name"])
        );
        let containers = spec(&["template", "spec", "containers"]);
        let Some(Yaml::Seq(containers)) = containers else {
            panic!("no containers");
        };
        let env = containers[0].get(&["env"]).cloned();
        let Some(Yaml::Seq(env)) = env else {
            panic!("no env");
        };
        assert_eq!(env[0].get(&["name"]), Some(&Yaml::str("BYZMTL_ID")));
        assert_eq!(
            env[0].get(&["valueFrom", "fieldRef", "fieldPath"]),
            Some(&Yaml::str("metadata.name"))
        );

        // The topology in the ConfigMap names the pods, and its edges follow the renaming.
        let Some(Yaml::Str(toml)) = config_map.get(&["data", "net.toml"]) else {
            panic!("no topology in the ConfigMap");
        };
        let t = Topology::from_toml(toml).map_err(|e| e.to_string());
        let ids: Option<Vec<String>> = t
            .as_ref()
            .ok()
            .map(|t| t.nodes.iter().map(|n| n.address.clone()).collect());
        assert_eq!(
            ids,
            Some(vec![
                "net-0.net:7000".to_string(),
                "net-1.net:7000".into(),
                "net-2.net:7000".into()
            ])
        );
        assert_eq!(
            t.as_ref().ok().map(|t| t.edge_list()),
            Some(vec![(0, 1), (1, 2)])
        );
        assert!(toml.starts_with(
            "# Node ids are the pod names of the StatefulSet `net`:\n\
             #   net-0 = a\n#   net-1 = b\n#   net-2 = z\n\n"
        ));
    }

    #[test]
    fn kubernetes_names_must_be_dns_labels() {
        for bad in ["Byz", "1net", "net-", &"n".repeat(51)] {
            let err = kubernetes_topology(&tiny(), bad).map(|_| ());
            assert!(
                matches!(err, Err(ComposeError::BadKubernetesName(ref n)) if n == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn scalars_are_quoted_when_yaml_would_misread_them() {
        let plain = [
            "node-0",
            "/etc/byzmtl/net.toml",
            "./a/b.toml",
            "../b",
            ".",
            "dnsrr",
            "a_b.c",
        ];
        for s in plain {
            assert_eq!(scalar(s), s);
        }
        let quoted_ = [
            ("byzmtl:latest", "\"byzmtl:latest\""),
            ("3s", "\"3s\""),
            (".hidden", "\".hidden\""),
            ("no", "\"no\""),
            ("Off", "\"Off\""),
            ("y", "\"y\""),
            ("null", "\"null\""),
            ("7000", "\"7000\""),
            ("1e3", "\"1e3\""),
            ("0.0.0.0", "\"0.0.0.0\""),
            ("127.0.0.1:17000:7000", "\"127.0.0.1:17000:7000\""),
            (".inf", "\".inf\""),
            ("a b", "\"a b\""),
            ("a #b", "\"a #b\""),
            ("say \"hi\"\\", "\"say \\\"hi\\\"\\\\\""),
            ("", "\"\""),
            ("-x", "\"-x\""),
            ("tab\there", "\"tab\\there\""),
        ];
        for (s, q) in quoted_ {
            assert_eq!(scalar(s), q, "{s}");
        }
    }

    #[test]
    fn multi_line_strings_become_literal_blocks() {
        let doc = Yaml::map([
            ("a", Yaml::str("x = 1\n\ny = 2\n")),
            ("b", Yaml::str("no newline\nat end")),
            ("c", Yaml::str("  indented\nfirst line\n")),
            ("d", Yaml::str("two\n\n")),
            ("e", Yaml::str("trailing space \nline\n")),
            ("f", Yaml::Seq(vec![Yaml::str("in a list\n")])),
        ]);
        let expected = "a: |\n  x = 1\n\n  y = 2\nb: |-\n  no newline\n  at end\n\
                        c: |2\n    indented\n  first line\nd: |+\n  two\n\n\
                        e: \"trailing space \\nline\\n\"\nf:\n  - |\n    in a list\n";
        assert_eq!(doc.to_text(), expected);
    }

    #[test]
    fn nested_collections_indent_under_their_keys() {
        let doc = Yaml::map([
            (
                "list",
                Yaml::Seq(vec![
                    Yaml::map([
                        ("k", Yaml::Int(1)),
                        ("m", Yaml::map([("v", Yaml::Bool(true))])),
                    ]),
                    Yaml::Seq(vec![Yaml::Int(2)]),
                    Yaml::Map(Vec::new()),
                ]),
            ),
            ("empty", Yaml::Seq(Vec::new())),
        ]);
        let expected = "list:\n  - k: 1\n    m:\n      v: true\n  -\n    - 2\n  - {}\nempty: []\n";
        assert_eq!(doc.to_text(), expected);
    }

    #[test]
    fn relative_paths_start_with_a_dot() {
        let cases = [
            (
                "docker-compose.yml",
                "deploy/topologies/compose.toml",
                "./deploy/topologies/compose.toml",
            ),
            (
                "deploy/swarm/stack.yml",
                "deploy/topologies/compose.toml",
                "../topologies/compose.toml",
            ),
            ("/tmp/x/dc.yml", "/tmp/x/net.toml", "./net.toml"),
            ("/tmp/x/dc.yml", "/tmp/x", "."),
            ("/tmp/x/dc.yml", "/srv/net.toml", "../../srv/net.toml"),
        ];
        for (file, target, expected) in cases {
            assert_eq!(
                relative_to_folder_of(Path::new(file), Path::new(target)),
                expected,
                "{file} -> {target}"
            );
        }
    }
}
