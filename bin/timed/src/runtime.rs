//! Process plumbing: logging and signals.

use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global log subscriber: `RUST_LOG` if set, else `filter` from the config.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => {
            EnvFilter::try_new(&env).map_err(|e| format!("RUST_LOG='{env}': {e}"))?
        }
        _ => EnvFilter::try_new(filter).map_err(|e| format!("log.filter='{filter}': {e}"))?,
    };
    // Colour only for a terminal: `timed devnet` and service managers send the output to a
    // file, where escape codes make the log unreadable and ungreppable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

/// Turns SIGINT/SIGTERM into a graceful shutdown: the first flips the returned watch to `true`;
/// a second one exits at once. Forcing is safe for the data: every block commit and vote write
/// is atomic on disk, so the worst a forced exit loses is work not yet committed.
pub fn shutdown_signal() -> std::io::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        for count in 0.. {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            if count == 0 {
                tracing::info!(
                    signal = name,
                    "shutting down; send the signal again to force"
                );
                let _ = sender.send(true);
            } else {
                tracing::warn!(signal = name, "second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(receiver)
}
