//! Log output for the binaries: human-readable or JSON lines, filtered like `RUST_LOG`.
//!
//! Levels follow `RUST_LOG` directives (`info`, `byzmtl=debug`, `byzmtl::driver=debug,warn`);
//! without it, `info`. Text lines are coloured only when stderr is a terminal, so files and
//! pipes get plain text.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the event's fields at the top level.
    Json,
}

/// Installs the global subscriber: levels from `RUST_LOG` (default `info`), lines to stderr.
///
/// A `RUST_LOG` that does not parse is reported in a warning and replaced by `info`, rather
/// than silently ignored.
pub fn init(format: LogFormat) {
    let (filter, bad_filter) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) => match EnvFilter::try_new(&directives) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some((directives, e.to_string()))),
        },
        Err(_) => (EnvFilter::new("info"), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);

    // A second call (tests) leaves the first subscriber in place.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Some((directives, reason)) = bad_filter {
        tracing::warn!(%directives, %reason, "ignoring RUST_LOG, logging at info");
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                interrupt.await.ok();
            }
        }
    }
    #[cfg(not(unix))]
    interrupt.await.ok();
}
