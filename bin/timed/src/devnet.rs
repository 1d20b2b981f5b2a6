//! `timed devnet`: a local network of masternodes on loopback in one command.
//!
//! The first run creates a directory with one data directory per node (keys, genesis, config)
//! and a funded development wallet; later runs with the same directory start the same nodes on
//! the same chain. Each node is a separate `timed` process, exactly as an operator runs one.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timecoin_ledger::{GenesisAllocation, GenesisMasternode, GenesisSpec, ParamOverrides};
use timecoin_primitives::{Address, Network, SecretKey};
use timecoin_wallet::{KdfParams, Keystore};

use crate::config::{self, Config};
use crate::genesis::GENESIS_FILE;

/// The file describing a devnet directory.
pub const MANIFEST_FILE: &str = "devnet.json";
/// The development wallet (a `time-cli` wallet file).
pub const WALLET_FILE: &str = "wallet.json";
/// Its password, deliberately public: devnet coins are worthless.
pub const WALLET_PASSWORD: &str = "devnet";
/// The development key, as 64 hex digits, for tools that want the raw key.
pub const WALLET_KEY_FILE: &str = "dev-wallet.key";
/// TIME given to the development wallet at genesis.
pub const DEV_WALLET_TIME: u64 = 1_000_000;
/// How long stopping nodes may take before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// How to lay out a new devnet.
#[derive(Clone, Debug)]
pub struct DevnetOptions {
    /// The devnet directory.
    pub dir: PathBuf,
    /// Masternodes to run (only for a new directory).
    pub nodes: usize,
    /// The first port; node i uses base + 3i (peers), + 1 (RPC), + 2 (metrics).
    pub base_port: u16,
    /// Milliseconds between blocks (only for a new directory).
    pub block_interval_ms: u64,
}

/// What a devnet directory holds, written at creation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Each node's data directory name and ports.
    pub nodes: Vec<ManifestNode>,
    /// The development wallet's address.
    pub wallet_address: String,
}

/// One node of a devnet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestNode {
    /// Its data directory, relative to the devnet directory.
    pub dir: String,
    /// Peer-to-peer port.
    pub p2p_port: u16,
    /// RPC port.
    pub rpc_port: u16,
    /// Metrics port.
    pub metrics_port: u16,
}

fn random_key() -> SecretKey {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    SecretKey::from_bytes(bytes)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Creates a devnet directory: keys, genesis, per-node configs and the wallet.
pub fn create(options: &DevnetOptions) -> Result<Manifest, String> {
    if options.nodes == 0 || options.nodes > 32 {
        return Err("--nodes must be between 1 and 32".into());
    }
    if options.base_port as usize + 3 * options.nodes > u16::MAX as usize {
        return Err("--base-port is too high for that many nodes".into());
    }
    std::fs::create_dir_all(&options.dir)
        .map_err(|e| format!("cannot create {}: {e}", options.dir.display()))?;
    let network = Network::Devnet;
    let wallet_key = random_key();
    let wallet_address = Address::from_public_key(&wallet_key.public_key());
    let node_keys: Vec<SecretKey> = (0..options.nodes).map(|_| random_key()).collect();
    let nodes: Vec<ManifestNode> = (0..options.nodes)
        .map(|i| {
            let base = options.base_port + 3 * i as u16;
            ManifestNode {
                dir: format!("node{i}"),
                p2p_port: base,
                rpc_port: base + 1,
                metrics_port: base + 2,
            }
        })
        .collect();
    let spec = GenesisSpec {
        network: network.name().into(),
        timestamp_ms: crate::daemon::now_ms(),
        allocations: vec![GenesisAllocation {
            address: wallet_address.encode(network),
            amount: DEV_WALLET_TIME.to_string(),
        }],
        masternodes: node_keys
            .iter()
            .zip(&nodes)
            .map(|(key, node)| GenesisMasternode {
                owner: wallet_address.encode(network),
                node_key: key.public_key().to_string(),
                tier: "bronze".into(),
                network_address: format!("/ip4/127.0.0.1/tcp/{}", node.p2p_port),
            })
            .collect(),
        overrides: Some(ParamOverrides {
            block_interval_ms: Some(options.block_interval_ms),
            ..Default::default()
        }),
    };
    let genesis_text = serde_json::to_string_pretty(&spec).expect("plain data serialises");
    timecoin_ledger::build_genesis(&spec)
        .map_err(|e| format!("the devnet genesis is invalid: {e}"))?;
    for (i, (node, key)) in nodes.iter().zip(&node_keys).enumerate() {
        let dir = options.dir.join(&node.dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::write(dir.join(GENESIS_FILE), &genesis_text)
            .map_err(|e| format!("cannot write genesis: {e}"))?;
        write_private(&dir.join("masternode.key"), &key.to_bytes())?;
        let mut config = Config::default_for(network);
        config.node.listen_address = ([127, 0, 0, 1], node.p2p_port).into();
        config.node.bootstrap_peers = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("127.0.0.1:{}", n.p2p_port))
            .collect();
        config.rpc.bind = ([127, 0, 0, 1], node.rpc_port).into();
        config.metrics.bind = ([127, 0, 0, 1], node.metrics_port).into();
        config.masternode.enabled = true;
        config.masternode.key_file = "masternode.key".into();
        config.node.verify_threads = verify_threads_per_node(nodes.len());
        let text = format!(
            "# Written by `timed devnet`; every key is documented in `timed --help` and the node's default config.\n{}",
            toml::to_string(&config).map_err(|e| e.to_string())?
        );
        std::fs::write(dir.join(config::CONFIG_FILE), text)
            .map_err(|e| format!("cannot write config: {e}"))?;
    }
    let mut wallet = Keystore::create(
        &options.dir.join(WALLET_FILE),
        WALLET_PASSWORD.as_bytes(),
        network,
        KdfParams::default(),
    )
    .map_err(|e| e.to_string())?;
    wallet
        .import_key(wallet_key.clone(), "devnet genesis funds")
        .map_err(|e| e.to_string())?;
    write_private(
        &options.dir.join(WALLET_KEY_FILE),
        hex::encode(wallet_key.to_bytes()).as_bytes(),
    )?;
    let manifest = Manifest {
        nodes,
        wallet_address: wallet_address.encode(network),
    };
    std::fs::write(
        options.dir.join(MANIFEST_FILE),
        serde_json::to_string_pretty(&manifest).expect("serialises"),
    )
    .map_err(|e| format!("cannot write the manifest: {e}"))?;
    Ok(manifest)
}

/// Loads the devnet at `options.dir`, creating it first if it is new.
pub fn load_or_create(options: &DevnetOptions) -> Result<(Manifest, bool), String> {
    let path = options.dir.join(MANIFEST_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let manifest = serde_json::from_str(&text)
            .map_err(|e| format!("{} is damaged: {e}", path.display()))?;
        return Ok((manifest, false));
    }
    if options.dir.exists()
        && std::fs::read_dir(&options.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(format!(
            "{} exists and is not a devnet directory (no {MANIFEST_FILE}); choose another --dir",
            options.dir.display()
        ));
    }
    Ok((create(options)?, true))
}

/// Starts node processes for `manifest`; their output goes to `timed.log` in each data directory.
///
/// Each node runs in a process group of its own: a Ctrl-C in the terminal then reaches only the
/// devnet process, which asks each node to stop exactly once ([`stop_nodes`]). In the terminal's
/// group, every node got the terminal's SIGINT and then the devnet's SIGTERM, took the second for
/// "stop now", and exited without its clean stop.
pub fn spawn_nodes(dir: &Path, manifest: &Manifest) -> Result<Vec<Child>, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the timed executable: {e}"))?;
    let mut children = Vec::new();
    for node in &manifest.nodes {
        let data_dir = dir.join(&node.dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("timed.log"))
            .map_err(|e| format!("cannot open the log of {}: {e}", node.dir))?;
        let child = Command::new(&exe)
            .arg("--network=devnet")
            .arg(format!("--datadir={}", data_dir.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", node.dir))?;
        children.push(child);
    }
    Ok(children)
}

/// Asks every node to stop (SIGTERM), then kills those still running after a grace period.
pub fn stop_nodes(children: &mut [Child]) {
    for child in children.iter_mut() {
        if matches!(child.try_wait(), Ok(Some(_))) {
            continue;
        }
        // SIGTERM lets each node flush and exit cleanly; std offers only SIGKILL. A second
        // signal to our process group (`timeout` sends one to the process and one to its
        // group) can reach the helper before it leaves our group, and kill it before it sent
        // anything: the first node then never stopped. So a helper ended by a signal is run
        // again.
        for _ in 0..5 {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stderr(Stdio::null())
                .process_group(0)
                .status();
            if status.is_ok_and(|status| status.code().is_some()) {
                break;
            }
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for child in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// The text printed when a devnet starts.
pub fn banner(dir: &Path, manifest: &Manifest, created: bool) -> String {
    let mut text = format!(
        "TimeCoin devnet {} in {}\n\n  node   p2p     RPC                       metrics\n",
        if created { "created" } else { "restarted" },
        dir.display()
    );
    for node in &manifest.nodes {
        text.push_str(&format!(
            "  {:<6} {:<7} http://127.0.0.1:{:<10} http://127.0.0.1:{}/metrics\n",
            node.dir, node.p2p_port, node.rpc_port, node.metrics_port
        ));
    }
    let first = &manifest.nodes[0];
    text.push_str(&format!(
        "\nDevelopment wallet: {}/{WALLET_FILE} (password '{WALLET_PASSWORD}'), address {}, {DEV_WALLET_TIME} TIME\n\
         Its raw key: {}/{WALLET_KEY_FILE}\n\n\
         Try:\n  TIME_WALLET_PASSWORD={WALLET_PASSWORD} time-cli -devnet -datadir={dir}/{node} -rpcport={port} -wallet={dir}/{WALLET_FILE} getbalance\n  \
         time-cli -devnet -datadir={dir}/{node} -rpcport={port} getblockchaininfo\n\nLogs: {dir}/node*/timed.log. Ctrl-C stops every node.\n",
        dir.display(),
        manifest.wallet_address,
        dir.display(),
        dir = dir.display(),
        node = first.dir,
        port = first.rpc_port,
    ));
    text
}

/// Each node's share of this machine's cores for parallel signature checks, at least one. With
/// every node using every core, their idle pool threads spin on cores the others need: 8% of a
/// node's CPU in a four-node `time-bench` profile on two cores.
pub fn verify_threads_per_node(nodes: usize) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
    u32::try_from((cores / nodes.max(1)).max(1)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_consistent_directory_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let options = DevnetOptions {
            dir: dir.path().join("net"),
            nodes: 3,
            base_port: 45000,
            block_interval_ms: 500,
        };
        let (manifest, created) = load_or_create(&options).unwrap();
        assert!(created);
        assert_eq!(manifest.nodes.len(), 3);
        for node in &manifest.nodes {
            let data = options.dir.join(&node.dir);
            let (config, _) = config::load(&data, Network::Devnet, &[]).unwrap();
            assert!(config.masternode.enabled);
            assert_eq!(config.rpc.bind.port(), node.rpc_port);
            assert_eq!(config.node.bootstrap_peers.len(), 2);
            // Three nodes share this machine's cores.
            assert_eq!(config.node.verify_threads, verify_threads_per_node(3));
            assert!(config.node.verify_threads >= 1);
            let (genesis, params) = crate::genesis::load(&data, Network::Devnet).unwrap();
            assert_eq!(params.block_interval_ms, 500);
            assert_eq!(genesis.transactions.len(), 1 + 3);
        }
        let wallet = Keystore::open(
            &options.dir.join(WALLET_FILE),
            WALLET_PASSWORD.as_bytes(),
            Network::Devnet,
        )
        .unwrap();
        assert_eq!(
            wallet.addresses()[0].0.encode(Network::Devnet),
            manifest.wallet_address
        );
        let (again, created) = load_or_create(&options).unwrap();
        assert!(!created);
        assert_eq!(verify_threads_per_node(1000), 1);
        assert_eq!(again.wallet_address, manifest.wallet_address);
        std::fs::write(dir.path().join("other").with_extension("txt"), "x").unwrap();
        let foreign = DevnetOptions {
            dir: dir.path().to_path_buf(),
            ..options
        };
        assert!(
            load_or_create(&foreign)
                .unwrap_err()
                .contains("not a devnet directory")
        );
    }
}
