//! `byzmtl`: the operator's tool for byzmtl networks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use byzmtl::compare::{self, Runner};
use byzmtl::compose;
use byzmtl::generate::PaperSetup;
use byzmtl::launcher;
use byzmtl::logging::{self, LogFormat};
use byzmtl::report;
use byzmtl::rules::Rule;
use byzmtl::status;
use byzmtl::topology::{Overrides, Topology};

/// Runs, inspects and compares byzmtl networks.
#[derive(Debug, Parser)]
#[command(name = "byzmtl", version)]
struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "BYZMTL_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Where runs go and how nodes are started.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The run folder.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// The `byzmtl-node` binary (default: the one next to this program).
    #[arg(long, env = "BYZMTL_NODE_BIN")]
    node_bin: Option<PathBuf>,
    /// Run inside this process with the simulator instead of as processes.
    #[arg(long)]
    in_process: bool,
}

/// Settings that override the topology file's (and its `BYZMTL_*` environment).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
struct SettingArgs {
    /// How many rounds to run.
    #[arg(long)]
    rounds: Option<u64>,
    /// The network's seed.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the built-in demo: 20 nodes, 4 Byzantine, every rule, as local processes.
    Demo {
        #[command(flatten)]
        run: RunArgs,
        /// Rounds per run.
        #[arg(long, default_value_t = 300)]
        rounds: u64,
    },
    /// Runs a topology as local processes on loopback and prints its summary.
    Launch {
        /// The topology file.
        topology: PathBuf,
        #[command(flatten)]
        run: RunArgs,
        /// The rule, overriding the topology's.
        #[arg(long)]
        rule: Option<Rule>,
        #[command(flatten)]
        settings: SettingArgs,
    },
    /// Runs a topology inside this process and prints its summary.
    Simulate {
        /// The topology file.
        topology: PathBuf,
        /// The run folder.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// The rule, overriding the topology's.
        #[arg(long)]
        rule: Option<Rule>,
        #[command(flatten)]
        settings: SettingArgs,
    },
    /// Runs a topology once per rule and prints and draws the comparison.
    Compare {
        /// The topology file.
        topology: PathBuf,
        /// The rules to compare, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "loss-filtered,distance,average,none"
        )]
        rules: Vec<Rule>,
        /// Attacks to sweep, comma-separated (`uniform,alie,...`): each replaces every
        /// Byzantine node's attack in turn, and the matrix of losses relative to `none` is
        /// printed.
        #[arg(long, value_delimiter = ',')]
        attacks: Vec<String>,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        settings: SettingArgs,
    },
    /// Writes the paper's target-localization topology (or a variant) to a file.
    Generate {
        /// The file to write.
        #[arg(long, short)]
        output: PathBuf,
        /// How many nodes.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// How many of them are Byzantine.
        #[arg(long, default_value_t = 20)]
        byzantine: usize,
        /// How many rounds.
        #[arg(long, default_value_t = 500)]
        rounds: u64,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Writes a docker-compose file (or a swarm stack, or Kubernetes manifests) for a topology.
    Compose(compose::ComposeArgs),
    /// Shows live nodes' state as a table, read through GetState.
    Status {
        /// Node addresses (`host:port`), or one topology file whose nodes to read.
        #[arg(required = true)]
        targets: Vec<String>,
        /// How long to wait for each node, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Also show each node's view of its neighbours: score, weight, fetch time,
        /// timeouts and rejections.
        #[arg(long)]
        neighbours: bool,
    },
    /// Exits 0 if the node at ADDRESS reports SERVING through the gRPC health service.
    Health {
        /// The node's address, `host:port`.
        address: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);

    match cli.command {
        Command::Demo { run, rounds } => {
            let mut setup = PaperSetup::demo();
            setup.rounds = rounds;
            let topology = setup.build();
            let out = run
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs/demo"));
            println!(
                "demo: {} nodes ({} Byzantine), {} rounds per rule, rules {}",
                setup.nodes,
                setup.byzantine,
                setup.rounds,
                Rule::PAPER.map(Rule::name).join(", ")
            );
            run_compare(&topology, &Rule::PAPER, &run, &out).await?;
        }
        Command::Launch {
            topology,
            run,
            rule,
            settings,
        } => {
            let topology = load(&topology, rule, settings)?;
            let out = run.out.clone().unwrap_or_else(|| default_out(&topology));
            let runner = runner(&run);
            let data =
                compare::run_one(&topology, &runner, &out, logging::shutdown_signal()).await?;
            let summary = report::summarize(topology.rule.name(), &data);
            print!("{}", report::table(&[summary]));
            println!("run folder: {}", out.display());
        }
        Command::Simulate {
            topology,
            out,
            rule,
            settings,
        } => {
            let topology = load(&topology, rule, settings)?;
            let out = out.unwrap_or_else(|| default_out(&topology));
            let started = std::time::Instant::now();
            let data =
                compare::run_one(&topology, &Runner::InProcess, &out, std::future::pending())
                    .await?;
            let elapsed = started.elapsed();
            let summary = report::summarize(topology.rule.name(), &data);
            print!("{}", report::table(std::slice::from_ref(&summary)));
            let series = report::loss_series(topology.rule.name(), &data);
            let mut figures = report::draw_losses(&out.join("loss"), &topology, &[series])?;
            figures.extend(report::draw_network(&out.join("network"), &topology)?);
            println!(
                "simulated in {:.3} s; run folder: {}",
                elapsed.as_secs_f64(),
                out.display()
            );
            print_figures(&figures);
        }
        Command::Compare {
            topology,
            rules,
            attacks,
            run,
            settings,
        } => {
            let topology = load(&topology, None, settings)?;
            let out = run.out.clone().unwrap_or_else(|| default_out(&topology));
            if attacks.is_empty() {
                run_compare(&topology, &rules, &run, &out).await?;
            } else {
                run_attack_matrix(&topology, &attacks, &rules, &run, &out).await?;
            }
        }
        Command::Generate {
            output,
            nodes,
            byzantine,
            rounds,
            seed,
        } => {
            if byzantine > nodes {
                bail!("--byzantine {byzantine} is more than --nodes {nodes}");
            }
            let setup = PaperSetup {
                name: output
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "paper".into()),
                nodes,
                byzantine,
                rounds,
                seed,
                ..PaperSetup::paper()
            };
            let text = setup.build().to_toml()?;
            std::fs::write(&output, text)
                .with_context(|| format!("cannot write `{}`", output.display()))?;
            println!("wrote {}", output.display());
        }
        Command::Compose(args) => {
            let done = if args.check { "up to date" } else { "wrote" };
            for path in compose::run(&args)? {
                println!("{done}: {}", path.display());
            }
        }
        Command::Status {
            targets,
            timeout_ms,
            neighbours,
        } => {
            let addresses = match targets.as_slice() {
                [one] if Path::new(one).is_file() => {
                    load(Path::new(one), None, SettingArgs::default())?
                        .nodes
                        .into_iter()
                        .map(|n| n.address)
                        .collect()
                }
                _ => targets,
            };
            let timeout = Duration::from_millis(timeout_ms);
            let reads = addresses.iter().map(|a| status::get_state(a, timeout));
            let states = futures::future::join_all(reads).await;
            let rows: Vec<_> = addresses.into_iter().zip(states).collect();
            print!("{}", status::table(&rows));
            if neighbours {
                // A Byzantine node runs no rounds, so it has no view of its neighbours.
                let honest = rows
                    .iter()
                    .filter_map(|(_, s)| s.as_ref().ok())
                    .filter(|s| s.role == "honest");
                for state in honest {
                    println!("\n{} sees:", state.node_id);
                    print!("{}", status::neighbour_table(state));
                }
            }
        }
        Command::Health { address } => {
            if !status::is_serving(&address, Duration::from_secs(3)).await? {
                bail!("node at `{address}` is not serving");
            }
        }
    }
    Ok(())
}

/// Loads a topology with an optional rule override and the settings' overrides.
fn load(path: &Path, rule: Option<Rule>, settings: SettingArgs) -> anyhow::Result<Topology> {
    let overrides = Overrides {
        rule,
        rounds: settings.rounds,
        seed: settings.seed,
        ..Overrides::default()
    };
    Ok(Topology::load(path, &overrides)?)
}

fn default_out(topology: &Topology) -> PathBuf {
    let name = if topology.name.is_empty() {
        "run"
    } else {
        topology.name.as_str()
    };
    PathBuf::from("runs").join(name)
}

fn runner(run: &RunArgs) -> Runner {
    if run.in_process {
        Runner::InProcess
    } else {
        Runner::Launch {
            node_bin: run
                .node_bin
                .clone()
                .unwrap_or_else(launcher::sibling_node_binary),
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }
}

/// Runs a comparison, prints its table and where the figures are.
async fn run_compare(
    topology: &Topology,
    rules: &[Rule],
    run: &RunArgs,
    out: &Path,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let stop = tokio::sync::watch::Sender::new(false);
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            logging::shutdown_signal().await;
            stop.send_replace(true);
        })
    };
    let interrupted = || {
        let mut rx = stop.subscribe();
        async move {
            rx.wait_for(|&stopped| stopped).await.ok();
        }
    };
    let result = compare::compare(topology, rules, &runner(run), out, interrupted).await;
    watcher.abort();
    let comparison = result?;
    print!("{}", report::table(&comparison.summaries));
    if let Some(accuracy) = report::node_accuracy_table(&comparison.summaries) {
        print!("\n{accuracy}\n");
    }
    println!(
        "{} runs in {:.1} s; run folders under {}",
        rules.len(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    print_figures(&comparison.figures);
    Ok(())
}

/// Runs every attack under every rule and prints the matrix of losses relative to `none`.
async fn run_attack_matrix(
    topology: &Topology,
    attacks: &[String],
    rules: &[Rule],
    run: &RunArgs,
    out: &Path,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let interrupted = || logging::shutdown_signal();
    let matrix =
        compare::compare_attacks(topology, attacks, rules, &runner(run), out, interrupted).await?;
    println!("honest nodes' last-50-rounds mean loss, relative to rule `none`:");
    print!("{}", matrix.table());
    println!(
        "{} runs in {:.1} s; run folders under {}",
        matrix.attacks.len() * matrix.rules.len(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

fn print_figures(figures: &[PathBuf]) {
    for f in figures {
        println!("figure: {}", f.display());
    }
}
