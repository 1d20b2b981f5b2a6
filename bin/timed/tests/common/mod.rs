//! A real devnet for tests: `timed` processes on 127.0.0.1 with free ports and a temporary
//! directory. Every process is killed when the [`Devnet`] is dropped, even if the test panics.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use timecoin_rpc::RpcClient;
use timed::devnet::{self, DevnetOptions, Manifest};

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
        let deadline = Instant::now() + within;
        for i in 0..self.children.len() {
            if self.children[i].is_none() {
                continue;
            }
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
    }
}
