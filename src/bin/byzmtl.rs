//! `byzmtl`: the operator's tool for byzmtl networks.

use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand};

use byzmtl::logging::{self, LogFormat};
use byzmtl::status;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Shows live nodes' state as a table, read through GetState.
    Status {
        /// Node addresses, `host:port`.
        #[arg(required = true)]
        addresses: Vec<String>,
        /// How long to wait for each node, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
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
        Command::Status {
            addresses,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let reads = addresses.iter().map(|a| status::get_state(a, timeout));
            let states = futures::future::join_all(reads).await;
            let rows: Vec<_> = addresses.into_iter().zip(states).collect();
            print!("{}", status::table(&rows));
        }
        Command::Health { address } => {
            if !status::is_serving(&address, Duration::from_secs(3)).await? {
                bail!("node at `{address}` is not serving");
            }
        }
    }
    Ok(())
}
