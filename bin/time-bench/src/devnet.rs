//! Starting or attaching to a devnet laid out by `timed devnet`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use timecoin_primitives::SecretKey;
use timed::devnet::{self as layout, DevnetOptions, Manifest};

use crate::http::Client;
use crate::procfs;

/// A running devnet the bench talks to.
pub struct Devnet {
    /// Its directory.
    pub dir: PathBuf,
    /// Node ports and the wallet address.
    pub manifest: Manifest,
    /// Node processes this bench started (empty when attached).
    pub children: Vec<Child>,
    /// Each node's process id, for CPU and memory readings (`None` if not found).
    pub pids: Vec<Option<u32>>,
}

impl Devnet {
    /// Creates (or reuses) the devnet at `options.dir` and starts its nodes with the `timed`
    /// executable `timed_exe`, as `timed devnet` would.
    ///
    /// `settings` replace keys of every node's `config.toml` (`("key", "value")`, the value as
    /// TOML); keys are unique across the file's sections.
    pub fn start(
        options: &DevnetOptions,
        timed_exe: &Path,
        settings: &[(&str, String)],
    ) -> Result<Devnet, String> {
        let (manifest, _) = layout::load_or_create(options)?;
        let mut children = Vec::new();
        for node in &manifest.nodes {
            let data_dir = options.dir.join(&node.dir);
            if !settings.is_empty() {
                let path = data_dir.join("config.toml");
                let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
                let text: Vec<String> = text
                    .lines()
                    .map(|line| {
                        let key = line.split('=').next().unwrap_or_default().trim();
                        match settings.iter().find(|(k, _)| *k == key) {
                            Some((k, value)) => format!("{k} = {value}"),
                            None => line.to_owned(),
                        }
                    })
                    .collect();
                std::fs::write(&path, text.join("\n") + "\n").map_err(|e| e.to_string())?;
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data_dir.join("timed.log"))
                .map_err(|e| format!("cannot open the log of {}: {e}", node.dir))?;
            let child = Command::new(timed_exe)
                .arg("--network=devnet")
                .arg(format!("--datadir={}", data_dir.display()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {} ({}): {e}", node.dir, timed_exe.display()))?;
            children.push(child);
        }
        let pids = children.iter().map(|c| Some(c.id())).collect();
        Ok(Devnet {
            dir: options.dir.clone(),
            manifest,
            children,
            pids,
        })
    }

    /// Attaches to the running devnet at `dir` (started by `timed devnet --dir dir`).
    pub fn attach(dir: &Path) -> Result<Devnet, String> {
        let path = dir.join(layout::MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let pids = manifest
            .nodes
            .iter()
            .map(|n| procfs::find_by_datadir(&dir.join(&n.dir)))
            .collect();
        Ok(Devnet {
            dir,
            manifest,
            children: Vec::new(),
            pids,
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.manifest.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.manifest.nodes.is_empty()
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&self.manifest.nodes[i].dir)
    }

    /// Node `i`'s RPC address.
    pub fn rpc_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.manifest.nodes[i].rpc_port))
    }

    /// A new keep-alive client for node `i`.
    pub fn client(&self, i: usize) -> Result<Client, String> {
        Client::from_cookie(self.rpc_addr(i), &self.data_dir(i))
    }

    /// The development wallet's key.
    pub fn dev_key(&self) -> Result<SecretKey, String> {
        let path = self.dir.join(layout::WALLET_KEY_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{} is not 64 hex digits", path.display()))?;
        Ok(SecretKey::from_bytes(bytes))
    }

    /// Waits until every node answers RPC and the chain has committed a block past `min_height`.
    /// A node this bench started that exits meanwhile (its port taken, a bad data directory) is
    /// reported at once, with the end of its log, rather than at the deadline.
    pub async fn wait_ready(&mut self, min_height: u64, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        for i in 0..self.len() {
            loop {
                let height = match self.client(i) {
                    Ok(mut c) => c.call("getblockcount", serde_json::json!([])).await,
                    Err(e) => Err(e),
                };
                match height {
                    Ok(h) if h.as_u64().unwrap_or(0) > min_height => break,
                    other if Instant::now() > deadline => {
                        return Err(format!("node {i} is not ready: {other:?}"));
                    }
                    _ => {
                        if let Some(exited) = self.exited(i) {
                            return Err(exited);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Why node `i`, started by this bench, is no longer running (`None` while it runs, or when
    /// attached).
    fn exited(&mut self, i: usize) -> Option<String> {
        let status = self.children.get_mut(i)?.try_wait().ok()??;
        let log = self.data_dir(i).join("timed.log");
        let tail = std::fs::read_to_string(&log)
            .map(|text| {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(5)..].join("\n")
            })
            .unwrap_or_default();
        Some(format!(
            "node {i} exited during start-up ({status}); the end of {}:\n{tail}",
            log.display()
        ))
    }

    /// Stops the nodes this bench started (SIGTERM, then kill after a grace period).
    pub fn stop(&mut self) {
        layout::stop_nodes(&mut self.children);
        self.children.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timed::devnet::ManifestNode;

    #[tokio::test]
    async fn a_node_that_exits_during_start_up_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("node0")).unwrap();
        std::fs::write(
            dir.path().join("node0").join("timed.log"),
            "starting\ntimed: cannot listen for RPC on 127.0.0.1:9 (rpc.bind): Address already in use\n",
        )
        .unwrap();
        let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let mut devnet = Devnet {
            dir: dir.path().to_path_buf(),
            manifest: Manifest {
                nodes: vec![ManifestNode {
                    dir: "node0".into(),
                    p2p_port: 9,
                    rpc_port: 9,
                    metrics_port: 9,
                }],
                wallet_address: String::new(),
            },
            pids: vec![Some(child.id())],
            children: vec![child],
        };
        // Long enough that a bench not watching its children fails with "not ready" instead.
        let error = devnet
            .wait_ready(1, Duration::from_secs(20))
            .await
            .unwrap_err();
        assert!(
            error.contains("node 0 exited during start-up") && error.contains("exit status: 3"),
            "{error}"
        );
        assert!(error.contains("Address already in use"), "{error}");
    }
}
