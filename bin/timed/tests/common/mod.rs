//! A real devnet for tests: `timed` processes on 127.0.0.1 with free ports and a temporary
//! directory. Every process is killed when the [`Devnet`] is dropped, even if the test panics.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use timecoin_primitives::Network;
use timecoin_rpc::RpcClient;
use timed::config::{self, Config};
use timed::devnet::{self, DevnetOptions, Manifest, ManifestNode};

/// The network key file written into each node's data directory by [`Devnet::start_private`].
pub const NETWORK_KEY_FILE: &str = "network.key";

/// Devnets of different tests would fight for two CPU cores and make each other's timing
/// meaningless, so tests hold this lock while their devnet runs.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the one-devnet-at-a-time lock (a test that failed while holding it does not poison it
/// for the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A way to call one node's RPC from another thread (the [`Devnet`] itself stays with the test
/// thread, which may need it mutably to stop or restart nodes meanwhile).
pub struct Endpoint {
    address: SocketAddr,
    data_dir: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Endpoint {
    /// Calls `method` (cookie authentication, read on each call since a restart renews it).
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let client =
            RpcClient::from_cookie(self.address, &self.data_dir).map_err(|e| e.to_string())?;
        self.runtime
            .block_on(client.call(method, params))
            .map_err(|e| e.to_string())
    }
}

/// A running (or stopped) devnet.
pub struct Devnet {
    pub dir: tempfile::TempDir,
    pub manifest: Manifest,
    pub children: Vec<Option<Child>>,
    runtime: tokio::runtime::Runtime,
}

/// A base port with `3 * count` free ports after it (best effort: ports are probed, then
/// released, so another process could take one in between; the range is random to make that
/// unlikely).
pub fn free_port_range(count: usize) -> u16 {
    for _ in 0..200 {
        let mut seed = [0u8; 2];
        getrandom::fill(&mut seed).unwrap();
        let base = 20_000 + (u16::from_le_bytes(seed) % 30_000);
        let all_free =
            (0..3 * count as u16).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free port range found");
}

impl Devnet {
    /// Creates and starts `nodes` masternodes with `block_interval_ms` blocks.
    pub fn start(nodes: usize, block_interval_ms: u64) -> Devnet {
        Devnet::start_with(nodes, block_interval_ms, None)
    }

    /// Like [`Devnet::start`], but a private network: every node holds `psk` in
    /// [`NETWORK_KEY_FILE`] and its config names it as `node.network_key_file`.
    pub fn start_private(nodes: usize, block_interval_ms: u64, psk: [u8; 32]) -> Devnet {
        Devnet::start_with(nodes, block_interval_ms, Some(psk))
    }

    fn start_with(nodes: usize, block_interval_ms: u64, psk: Option<[u8; 32]>) -> Devnet {
        let dir = tempfile::tempdir().unwrap();
        let options = DevnetOptions {
            dir: dir.path().join("devnet"),
            nodes,
            base_port: free_port_range(nodes),
            block_interval_ms,
        };
        let manifest = devnet::create(&options).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut net = Devnet {
            dir,
            manifest,
            children: Vec::new(),
            runtime,
        };
        if let Some(psk) = psk {
            for i in 0..nodes {
                net.give_network_key(i, psk);
            }
        }
        for i in 0..nodes {
            let child = net.spawn(i, &[]);
            net.children.push(Some(child));
        }
        for i in 0..nodes {
            net.wait_rpc(i, Duration::from_secs(60));
        }
        net
    }

    /// The devnet directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("devnet")
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root().join(&self.manifest.nodes[i].dir)
    }

    /// Writes `psk` into node `i`'s data directory and names it in its config.
    pub fn give_network_key(&self, i: usize, psk: [u8; 32]) {
        let dir = self.data_dir(i);
        std::fs::write(dir.join(NETWORK_KEY_FILE), hex::encode(psk)).unwrap();
        self.edit_config(i, |c| c.node.network_key_file = NETWORK_KEY_FILE.into());
    }

    /// Changes node `i`'s `config.toml` (takes effect at its next start).
    pub fn edit_config(&self, i: usize, edit: impl FnOnce(&mut Config)) {
        let dir = self.data_dir(i);
        let (mut config, path) = config::load(&dir, Network::Devnet, &[]).unwrap();
        edit(&mut config);
        std::fs::write(path, toml::to_string(&config).unwrap()).unwrap();
    }

    /// Lays out (but does not start) one more node that is not a masternode: the devnet's genesis,
    /// free ports on 127.0.0.1, and every existing node as a bootstrap peer; start it with
    /// [`Devnet::restart`]. Returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.manifest.nodes.len();
        let base = free_port_range(1);
        let node = ManifestNode {
            dir: format!("node{i}"),
            p2p_port: base,
            rpc_port: base + 1,
            metrics_port: base + 2,
        };
        let dir = self.root().join(&node.dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            self.data_dir(0).join(timed::genesis::GENESIS_FILE),
            dir.join(timed::genesis::GENESIS_FILE),
        )
        .unwrap();
        let mut config = Config::default_for(Network::Devnet);
        config.node.listen_address = ([127, 0, 0, 1], node.p2p_port).into();
        config.node.bootstrap_peers = self
            .manifest
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.p2p_port))
            .collect();
        config.rpc.bind = ([127, 0, 0, 1], node.rpc_port).into();
        config.metrics.bind = ([127, 0, 0, 1], node.metrics_port).into();
        config.masternode.enabled = false;
        std::fs::write(
            dir.join(config::CONFIG_FILE),
            toml::to_string(&config).unwrap(),
        )
        .unwrap();
        self.manifest.nodes.push(node);
        self.children.push(None);
        i
    }

    /// Node `i`'s RPC, usable from another thread.
    pub fn endpoint(&self, i: usize) -> Endpoint {
        Endpoint {
            address: self.rpc_address(i),
            data_dir: self.data_dir(i),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Node `i`'s block hashes at heights `1..=up_to`.
    pub fn hashes(&self, i: usize, up_to: u64) -> Vec<String> {
        (1..=up_to)
            .map(|h| {
                self.rpc(i, "getblockhash", json!([h]))
                    .unwrap_or_else(|e| panic!("node {i} has no block {h}: {e}"))
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    /// Indices of the nodes whose process is running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.children.len())
            .filter(|i| self.children[*i].is_some())
            .collect()
    }

    /// Node `i`'s process id.
    pub fn process_id(&self, i: usize) -> u32 {
        self.children[i].as_ref().expect("node is running").id()
    }

    /// Starts node `i`'s process with extra arguments.
    pub fn spawn(&self, i: usize, extra: &[&str]) -> Child {
        let data_dir = self.data_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("timed.log"))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_timed"))
            .arg("--network=devnet")
            .arg(format!("--datadir={}", data_dir.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Restarts node `i` after it was stopped.
    pub fn restart(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "node {i} is still running");
        self.children[i] = Some(self.spawn(i, &[]));
        self.wait_rpc(i, Duration::from_secs(60));
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM to node `i` and waits for it to exit; returns its exit code.
    pub fn terminate(&mut self, i: usize, within: Duration) -> Option<i32> {
        let mut child = self.children[i].take()?;
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!(
                    "node {i} did not exit within {within:?} of SIGTERM\n{}",
                    self.log(i)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node `i`'s RPC address.
    pub fn rpc_address(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.manifest.nodes[i].rpc_port))
    }

    /// Node `i`'s metrics address.
    pub fn metrics_address(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.manifest.nodes[i].metrics_port))
    }

    /// Calls an RPC method on node `i` (cookie authentication).
    pub fn rpc(&self, i: usize, method: &str, params: Value) -> Result<Value, String> {
        let client = RpcClient::from_cookie(self.rpc_address(i), &self.data_dir(i))
            .map_err(|e| e.to_string())?;
        self.runtime
            .block_on(client.call(method, params))
            .map_err(|e| e.to_string())
    }

    /// Waits until node `i` answers RPC.
    pub fn wait_rpc(&self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.rpc(i, "getblockcount", Value::Array(vec![])).is_err() {
            assert!(
                Instant::now() < deadline,
                "node {i} never answered RPC\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Node `i`'s committed height.
    pub fn height(&self, i: usize) -> u64 {
        self.rpc(i, "getblockcount", Value::Array(vec![]))
            .unwrap()
            .as_u64()
            .unwrap()
    }

    /// Waits until every running node has reached `height`.
    pub fn wait_height(&self, height: u64, within: Duration) {
        self.wait_height_on(&self.running(), height, within);
    }

    /// Waits until each of `nodes` has reached `height`.
    pub fn wait_height_on(&self, nodes: &[usize], height: u64, within: Duration) {
        let deadline = Instant::now() + within;
        for &i in nodes {
            while self
                .rpc(i, "getblockcount", Value::Array(vec![]))
                .ok()
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
                < height
            {
                assert!(
                    Instant::now() < deadline,
                    "node {i} did not reach height {height}\n{}",
                    self.log(i)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The last lines of node `i`'s log, for failure messages.
    pub fn log(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.data_dir(i).join("timed.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The development wallet file and its password.
    pub fn wallet(&self) -> (PathBuf, &'static str) {
        (
            self.root().join(devnet::WALLET_FILE),
            devnet::WALLET_PASSWORD,
        )
    }

    /// Path helper.
    pub fn path(&self, relative: &str) -> PathBuf {
        Path::new(&self.root()).join(relative)
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failure message shows one node's log; a consensus stall is often only explained by
        // the others', and CI keeps nothing but the output.
        if std::thread::panicking() {
            for i in 0..self.manifest.nodes.len() {
                eprintln!("--- node {i}, last lines of its log ---\n{}", self.log(i));
            }
        }
    }
}
