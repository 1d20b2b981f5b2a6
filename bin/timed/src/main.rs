//! `timed`, the TimeCoin node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use timecoin_primitives::Network;
use timed::config::{Override, default_data_dir};
use timed::daemon::{self, RunOptions};
use timed::devnet::{self, DevnetOptions};

/// jemalloc, not glibc's malloc: after a burst (a thousand 45 KB fan-outs and the 8 MB blocks
/// that carry them) glibc kept 375 MB of freed memory in its arenas, a devnet node's resident set
/// staying at 636 MB with 262 MB live. See ADR 0012.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long freed pages may stay resident before jemalloc returns them to the system.
const FREED_MEMORY_DECAY_MS: isize = 1_000;

/// Returns freed memory to the system within [`FREED_MEMORY_DECAY_MS`], from jemalloc's own
/// background threads so that an idle node shrinks too. Best effort: if a setting is refused,
/// jemalloc's defaults (10 s, purged by allocating threads) still bound what it keeps.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
fn tune_allocator() {
    use tikv_jemalloc_ctl::{Access, AsName};
    // 4096 is MALLCTL_ARENAS_ALL: every arena that exists now; `arenas.` sets later ones.
    let _ = b"arena.4096.dirty_decay_ms\0"
        .name()
        .write(FREED_MEMORY_DECAY_MS);
    let _ = b"arenas.dirty_decay_ms\0"
        .name()
        .write(FREED_MEMORY_DECAY_MS);
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
}

#[cfg(not(all(target_os = "linux", not(target_env = "musl"))))]
fn tune_allocator() {}

/// The TimeCoin node. Any configuration key can also be given as --section.key=value
/// (e.g. --rpc.bind=127.0.0.1:9000); see config.toml in the data directory for them all.
#[derive(Parser, Debug)]
#[command(name = "timed", version, about)]
struct Cli {
    /// The data directory (default ~/.timecoin, or ~/.timecoin/<network>).
    #[arg(long, global = true)]
    datadir: Option<PathBuf>,
    /// mainnet, testnet or devnet.
    #[arg(long, default_value = "mainnet", global = true)]
    network: Network,
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run a local network of masternodes on 127.0.0.1 until Ctrl-C.
    Devnet {
        /// Masternodes to run (used when the directory is new).
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// The devnet directory; running again with the same one continues the same chain.
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        /// First port: node i listens on base+3i (peers), base+3i+1 (RPC), base+3i+2 (metrics).
        #[arg(long, default_value_t = 44100)]
        base_port: u16,
        /// Milliseconds between blocks (used when the directory is new).
        #[arg(long, default_value_t = 1000)]
        block_interval_ms: u64,
    },
}

fn split_overrides(args: Vec<String>) -> Result<(Vec<String>, Vec<Override>), String> {
    let mut rest = Vec::new();
    let mut overrides = Vec::new();
    for arg in args {
        match arg.strip_prefix("--") {
            Some(body) if body.split('=').next().is_some_and(|key| key.contains('.')) => {
                overrides.push(body.parse().map_err(|e| format!("{arg}: {e}"))?);
            }
            _ => rest.push(arg),
        }
    }
    Ok((rest, overrides))
}

fn run_devnet(options: DevnetOptions) -> Result<(), String> {
    let (manifest, created) = devnet::load_or_create(&options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut children = devnet::spawn_nodes(&options.dir, &manifest)?;
    print!("{}", devnet::banner(&options.dir, &manifest, created));
    let outcome = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // The nodes have process groups of their own (`devnet::spawn_nodes`), so every signal
        // that should stop them reaches only us: Ctrl-C, `kill`, and a closed terminal's SIGHUP.
        // The handlers stay installed, so a signal during the stop (`timeout` sends one to the
        // process and one to its group) no longer ends this process before the nodes.
        let listen = |kind| signal(kind).map_err(|e| e.to_string());
        let mut interrupt = listen(SignalKind::interrupt())?;
        let mut terminate = listen(SignalKind::terminate())?;
        let mut hangup = listen(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = interrupt.recv() => return Ok(()),
                _ = terminate.recv() => return Ok(()),
                _ = hangup.recv() => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
            for (child, node) in children.iter_mut().zip(&manifest.nodes) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{} exited ({status}); see {}/{}/timed.log. Stopping the others.",
                        node.dir,
                        options.dir.display(),
                        node.dir
                    ));
                }
            }
        }
    });
    println!("stopping the devnet…");
    devnet::stop_nodes(&mut children);
    outcome
}

fn main() -> ExitCode {
    tune_allocator();
    let (args, overrides) = match split_overrides(std::env::args().collect()) {
        Ok(split) => split,
        Err(message) => {
            eprintln!("timed: {message}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Some(Commands::Devnet {
            nodes,
            dir,
            base_port,
            block_interval_ms,
        }) => run_devnet(DevnetOptions {
            dir,
            nodes,
            base_port,
            block_interval_ms,
        }),
        None => {
            let data_dir = cli.datadir.unwrap_or_else(|| default_data_dir(cli.network));
            let options = RunOptions {
                data_dir,
                network: cli.network,
                overrides,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|runtime| runtime.block_on(daemon::run(options)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("timed: {message}");
            ExitCode::FAILURE
        }
    }
}
