//! `config.toml`: the node's settings, every one also settable by a flag.
//!
//! The file is written with commented defaults on first start. Unknown keys, bad values and
//! conflicting settings are reported with the file, the key and a hint, and the node refuses to
//! start rather than guess.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use timecoin_network::{MAX_BOOTSTRAP_ADDRESSES, Multiaddr, parse_peer_address};
use timecoin_primitives::Network;

/// The file name inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";

/// Most `node.verify_threads`: far above any machine's cores, low enough that a typo does not
/// start thousands of threads.
pub const MAX_VERIFY_THREADS: u32 = 1024;

/// Ports a network uses by default: peer-to-peer, RPC, metrics. Each network has its own, so
/// nodes of different networks on one machine do not collide.
pub fn default_ports(network: Network) -> (u16, u16, u16) {
    match network {
        Network::Mainnet => (24100, 24101, 24102),
        Network::Testnet => (34100, 34101, 34102),
        Network::Devnet => (44100, 44101, 44102),
    }
}

/// Where a node keeps its data when no `--datadir` is given: `~/.timecoin` for mainnet and a
/// subdirectory per test network, as Bitcoin Core does, so the networks never share files.
pub fn default_data_dir(network: Network) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = home.join(".timecoin");
    match network {
        Network::Mainnet => base,
        other => base.join(other.name()),
    }
}

/// All settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Networking and identity.
    pub node: NodeConfig,
    /// Disk.
    pub storage: StorageConfig,
    /// Block consensus timing.
    pub consensus: ConsensusConfig,
    /// The transaction pool.
    pub mempool: MempoolConfig,
    /// Running as a masternode.
    pub masternode: MasternodeConfig,
    /// The JSON-RPC server.
    pub rpc: RpcConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[node]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Which network to join.
    pub network: String,
    /// Where to accept peer connections.
    pub listen_address: SocketAddr,
    /// Peers to contact first, as `ip:port`, `host.name:port` or a multiaddress (more are
    /// learned from them); see [`NodeConfig::bootstrap_addresses`].
    pub bootstrap_peers: Vec<String>,
    /// Most connected peers.
    pub max_peers: u32,
    /// Most inbound peers (the rest of `max_peers` is kept for outbound connections).
    pub max_inbound_peers: u32,
    /// Messages a peer may originate per second (gossip it published, relayed by anyone, plus
    /// its requests); the excess is dropped, and sustained double the rate is scored down.
    pub messages_per_second_per_peer: u32,
    /// How long a misbehaving peer stays banned, in seconds.
    pub ban_duration_secs: u64,
    /// A file holding a private network's pre-shared key; empty for a public network.
    pub network_key_file: String,
    /// Threads that check a batch of signatures in parallel; 0 uses every core. Nodes that
    /// share a machine (a devnet) should split its cores between them.
    pub verify_threads: u32,
}

/// `[storage]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Memory for the UTXO cache in MiB; 0 chooses from the machine's memory.
    pub utxo_cache_mb: u64,
    /// Keep block bodies for this many recent blocks only; 0 keeps all.
    pub prune_keep_blocks: u64,
    /// Whether every commit also saves redb's allocator state, so that reopening after a crash
    /// skips a full repair scan (~0.5 s per GB of database) at the price of a second fsync on
    /// every commit (ADR 0005).
    pub quick_repair: bool,
    /// Whether to keep the address index that `getaddressutxos`, `getaddressbalance` and
    /// wallets list coins with. It is kept in memory, derived from the UTXO set (16 bytes per
    /// UTXO, ADR 0030), so masternodes that serve no wallet can leave it out to save that
    /// memory. Changed while the node is stopped, the index is built from the UTXO set (or
    /// dropped) when the node next starts.
    pub address_index: bool,
}

/// `[consensus]`. The block interval itself is a chain parameter fixed by genesis (every node
/// must agree on it), so only this node's patience is configured here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusConfig {
    /// How long to wait for a round before changing view, in milliseconds.
    pub round_timeout_ms: u64,
    /// The back-off ceiling of the round timeout, in milliseconds.
    pub max_round_timeout_ms: u64,
}

/// `[mempool]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolConfig {
    /// Most transactions held.
    pub max_transactions: u64,
    /// Most memory held by transactions, in MiB.
    pub max_mb: u64,
    /// Refuse new client transactions (RPC error -50, "node busy") while more transactions are
    /// waiting for finality than the network finalized in this many milliseconds of the last
    /// second (ADR 0026); 0 turns it off.
    pub busy_backlog_ms: u64,
    /// ... but never while fewer than this many are waiting.
    pub busy_min_backlog: u64,
}

/// `[masternode]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasternodeConfig {
    /// Whether this node votes as a masternode.
    pub enabled: bool,
    /// The node key file, relative to the data directory.
    pub key_file: String,
}

/// `[rpc]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcConfig {
    /// Whether to serve JSON-RPC.
    pub enabled: bool,
    /// Where to listen. Anything but loopback exposes the node: use with care.
    pub bind: SocketAddr,
    /// A fixed user name; empty uses a cookie file in the data directory.
    pub user: String,
    /// The password for `user`.
    pub password: String,
    /// Largest request body, in bytes.
    pub max_request_bytes: u64,
    /// Requests served at once.
    pub max_concurrent_requests: u32,
}

/// `[metrics]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether to serve `/metrics`, `/health` and `/ready`.
    pub enabled: bool,
    /// Where to listen.
    pub bind: SocketAddr,
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `RUST_LOG`-style filter, e.g. `info` or `info,timed=debug`. `RUST_LOG` overrides it.
    pub filter: String,
    /// `human` or `json`.
    pub format: LogFormat,
}

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl NodeConfig {
    /// The bootstrap peers as libp2p addresses for [`timecoin_network::NetworkConfig`]; host
    /// names stay names (`/dns/...`), which the network resolves each time it dials them.
    pub fn bootstrap_addresses(&self) -> Result<Vec<Multiaddr>, String> {
        self.bootstrap_peers
            .iter()
            .map(|peer| {
                peer_address(peer).map_err(|reason| format!("node.bootstrap_peers: {reason}"))
            })
            .collect()
    }
}

/// One peer address, or why it is not one.
fn peer_address(text: &str) -> Result<Multiaddr, String> {
    parse_peer_address(text).map_err(|e| match e {
        timecoin_network::Error::InvalidConfig(reason) => reason,
        other => other.to_string(),
    })
}

impl Config {
    /// The defaults for `network`.
    pub fn default_for(network: Network) -> Config {
        let (p2p, rpc, metrics) = default_ports(network);
        let devnet = network == Network::Devnet;
        Config {
            node: NodeConfig {
                network: network.name().to_string(),
                listen_address: SocketAddr::from(([0, 0, 0, 0], p2p)),
                bootstrap_peers: Vec::new(),
                max_peers: 100,
                max_inbound_peers: 50,
                messages_per_second_per_peer: 100,
                ban_duration_secs: 24 * 3600,
                network_key_file: String::new(),
                verify_threads: 0,
            },
            storage: StorageConfig {
                utxo_cache_mb: 0,
                prune_keep_blocks: 0,
                quick_repair: false,
                address_index: true,
            },
            consensus: ConsensusConfig {
                round_timeout_ms: if devnet { 2000 } else { 4000 },
                max_round_timeout_ms: 60_000,
            },
            mempool: MempoolConfig {
                max_transactions: 10_000,
                max_mb: 300,
                busy_backlog_ms: 250,
                busy_min_backlog: 1_000,
            },
            masternode: MasternodeConfig {
                enabled: false,
                key_file: "masternode.key".into(),
            },
            rpc: RpcConfig {
                enabled: true,
                bind: SocketAddr::from(([127, 0, 0, 1], rpc)),
                user: String::new(),
                password: String::new(),
                max_request_bytes: 10 * 1024 * 1024,
                max_concurrent_requests: 64,
            },
            metrics: MetricsConfig {
                enabled: true,
                bind: SocketAddr::from(([127, 0, 0, 1], metrics)),
            },
            log: LogConfig {
                filter: "info".into(),
                format: LogFormat::Human,
            },
        }
    }

    /// The network named in `[node]`, already checked by [`load`].
    pub fn network(&self) -> Network {
        self.node.network.parse().expect("validated when loaded")
    }
}

/// A problem with the configuration, pointing at where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `command line`).
    pub source: String,
    /// The key, as `section.key`, when one is to blame.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}\n  hint: {}", self.message, self.hint)
    }
}

impl std::error::Error for ConfigError {}

/// The commented default file for `network`. Every key is present with its default, so the file
/// documents itself; a test checks that it parses back to exactly [`Config::default_for`].
pub fn default_file(network: Network) -> String {
    let c = Config::default_for(network);
    format!(
        r#"# TimeCoin node configuration ({network}).
# Every key can also be set on the command line as --section.key=value, e.g. --rpc.bind=127.0.0.1:9000.
# Unknown keys are an error, so a typo never silently falls back to a default.

[node]
# mainnet, testnet or devnet. The data directory belongs to one network for good.
network = "{network}"
# Where to accept peer connections.
listen_address = "{listen}"
# Peers to contact first, as "ip:port", "host.name:port" or a multiaddress like
# "/dns4/seed.example.org/tcp/24100"; more are learned from them. Names are resolved at each dial.
bootstrap_peers = []
# Most connected peers, and how many of them may be inbound.
max_peers = {max_peers}
max_inbound_peers = {max_inbound}
# Messages a peer may originate per second (gossip it published, wherever it came from, plus its
# requests); the excess is dropped, and a peer that keeps sending twice this is scored down.
messages_per_second_per_peer = {rate}
# How long a misbehaving peer stays banned, in seconds. Bans survive restarts.
ban_duration_secs = {ban}
# A file with a private network's pre-shared key; empty for a public network.
network_key_file = ""
# Threads that check signatures in parallel; 0 uses every core. Nodes sharing a machine should
# split its cores between them (`timed devnet` does).
verify_threads = {verify_threads}

[storage]
# MiB for the UTXO cache; 0 picks a size from the machine's memory.
utxo_cache_mb = {cache}
# Keep block bodies for only this many recent blocks; 0 keeps all.
prune_keep_blocks = {prune}
# Save redb's allocator state on every commit: a restart after a crash then skips a repair scan
# (~0.5 s per GB of database), but every commit costs a second fsync.
quick_repair = {quick_repair}
# Keep the address index that getaddressutxos, getaddressbalance and wallets need. It lives in
# memory (16 bytes per UTXO); off saves that, fine for a masternode that serves no wallet.
# Changed while the node is stopped, the index is built (or dropped) at the next start.
address_index = {address_index}

[consensus]
# The first view-change timeout (doubled on each failure up to the max). The block interval is a
# chain parameter fixed by the genesis block, not a setting.
round_timeout_ms = {timeout}
max_round_timeout_ms = {max_timeout}

[mempool]
max_transactions = {mempool_count}
max_mb = {mempool_mb}
# Refuse new client transactions ("node busy", RPC error -50) once, for half a second, more have
# been waiting for finality than the network finalized in busy_backlog_ms of the last second, and
# never while fewer than busy_min_backlog are waiting. This keeps finality fast for the payments
# taken past the network's capacity; 0 turns it off.
busy_backlog_ms = {busy_ms}
busy_min_backlog = {busy_min}

[masternode]
# Vote and propose as a masternode, with the node key in key_file (relative to the data directory).
enabled = {mn_enabled}
key_file = "{mn_key}"

[rpc]
enabled = {rpc_enabled}
# Keep this on loopback unless you know what you are doing.
bind = "{rpc_bind}"
# Leave user empty to authenticate with the cookie file the node writes to the data directory.
user = ""
password = ""
max_request_bytes = {rpc_bytes}
max_concurrent_requests = {rpc_concurrency}

[metrics]
# Prometheus /metrics, and /health and /ready probes.
enabled = {metrics_enabled}
bind = "{metrics_bind}"

[log]
# A RUST_LOG-style filter (RUST_LOG overrides it), and "human" or "json" lines.
filter = "{filter}"
format = "human"
"#,
        listen = c.node.listen_address,
        max_peers = c.node.max_peers,
        max_inbound = c.node.max_inbound_peers,
        rate = c.node.messages_per_second_per_peer,
        ban = c.node.ban_duration_secs,
        verify_threads = c.node.verify_threads,
        cache = c.storage.utxo_cache_mb,
        prune = c.storage.prune_keep_blocks,
        quick_repair = c.storage.quick_repair,
        address_index = c.storage.address_index,
        timeout = c.consensus.round_timeout_ms,
        max_timeout = c.consensus.max_round_timeout_ms,
        mempool_count = c.mempool.max_transactions,
        mempool_mb = c.mempool.max_mb,
        busy_ms = c.mempool.busy_backlog_ms,
        busy_min = c.mempool.busy_min_backlog,
        mn_enabled = c.masternode.enabled,
        mn_key = c.masternode.key_file,
        rpc_enabled = c.rpc.enabled,
        rpc_bind = c.rpc.bind,
        rpc_bytes = c.rpc.max_request_bytes,
        rpc_concurrency = c.rpc.max_concurrent_requests,
        metrics_enabled = c.metrics.enabled,
        metrics_bind = c.metrics.bind,
        filter = c.log.filter,
    )
}

/// A `section.key=value` setting from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// `section.key`.
    pub key: String,
    /// The value as typed; parsed as a TOML value, or taken as a string if it is not one.
    pub value: String,
}

impl std::str::FromStr for Override {
    type Err = String;
    fn from_str(text: &str) -> Result<Override, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("'{text}' is not section.key=value"))?;
        if key.split('.').count() != 2 || key.split('.').any(str::is_empty) {
            return Err(format!("'{key}' is not section.key"));
        }
        Ok(Override {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

fn error(
    source: &str,
    key: Option<&str>,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> ConfigError {
    ConfigError {
        source: source.to_string(),
        key: key.map(str::to_string),
        message: message.into(),
        hint: hint.into(),
    }
}

/// Loads `config.toml` from `data_dir`, writing the commented defaults for `network` first if
/// there is none, then applies `overrides` and checks everything.
pub fn load(
    data_dir: &Path,
    network: Network,
    overrides: &[Override],
) -> Result<(Config, PathBuf), ConfigError> {
    let path = data_dir.join(CONFIG_FILE);
    let shown = path.display().to_string();
    if !path.exists() {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            error(
                &shown,
                None,
                format!("cannot create the data directory: {e}"),
                "check the path and permissions, or pass another --datadir",
            )
        })?;
        std::fs::write(&path, default_file(network)).map_err(|e| {
            error(
                &shown,
                None,
                format!("cannot write the default configuration: {e}"),
                "check permissions of the data directory",
            )
        })?;
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        error(
            &shown,
            None,
            format!("cannot read: {e}"),
            "check the file's permissions",
        )
    })?;
    parse(&text, &shown, network, overrides).map(|config| (config, path))
}

/// Parses configuration text (see [`load`]); `source` names it in errors.
pub fn parse(
    text: &str,
    source: &str,
    network: Network,
    overrides: &[Override],
) -> Result<Config, ConfigError> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        error(
            source,
            None,
            e.message().to_string(),
            describe_span(text, e.span()),
        )
    })?;
    // Missing sections and keys take their defaults; present ones are checked strictly.
    let defaults = toml::Table::try_from(Config::default_for(network)).expect("defaults serialise");
    check_known_keys(&table, &defaults, source)?;
    for o in overrides {
        let (section, key) = o.key.split_once('.').expect("checked when parsed");
        let Some(toml::Value::Table(known)) = defaults.get(section) else {
            return Err(error(
                "command line",
                Some(&o.key),
                format!("unknown section '{section}'"),
                format!("sections are: {}", names(&defaults)),
            ));
        };
        if !known.contains_key(key) {
            return Err(error(
                "command line",
                Some(&o.key),
                format!("unknown key '{key}' in [{section}]"),
                format!("keys of [{section}] are: {}", names(known)),
            ));
        }
        let value = parse_value(&o.value);
        table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| {
                error(
                    source,
                    Some(section),
                    "is not a section",
                    format!("write it as [{section}]"),
                )
            })?
            .insert(key.to_string(), value);
    }
    let merged = merge(defaults.clone(), table.clone());
    let config: Config = merged.try_into().map_err(|e: toml::de::Error| {
        // The merged table has lost the file's positions, so the error does not say which
        // setting is wrong: find it by trying each given one alone over the defaults.
        let key = wrong_setting(&defaults, &table);
        error(
            source,
            key.as_deref(),
            e.message().to_string(),
            "see the commented defaults: delete the file to have them written again",
        )
    })?;
    validate(&config, source)?;
    Ok(config)
}

/// The first setting of `given` (file and command line) that makes the defaults fail to
/// deserialise on its own, as `section.key`.
fn wrong_setting(defaults: &toml::Table, given: &toml::Table) -> Option<String> {
    given.iter().find_map(|(section, keys)| {
        keys.as_table()?.iter().find_map(|(key, value)| {
            let mut one = toml::Table::new();
            one.insert(
                section.clone(),
                toml::Value::Table(toml::Table::from_iter([(key.clone(), value.clone())])),
            );
            let trial: Result<Config, _> = merge(defaults.clone(), one).try_into();
            trial.is_err().then(|| format!("{section}.{key}"))
        })
    })
}

fn parse_value(text: &str) -> toml::Value {
    // `--rpc.enabled=false` is a bool and `--node.max_peers=8` a number, but
    // `--log.filter=debug` is a string without the user having to quote it.
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn names(table: &toml::Table) -> String {
    table.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn check_known_keys(
    table: &toml::Table,
    defaults: &toml::Table,
    source: &str,
) -> Result<(), ConfigError> {
    for (section, value) in table {
        let Some(toml::Value::Table(known)) = defaults.get(section) else {
            return Err(error(
                source,
                Some(section),
                format!("unknown section [{section}]"),
                format!("sections are: {}", names(defaults)),
            ));
        };
        let Some(entries) = value.as_table() else {
            return Err(error(
                source,
                Some(section),
                "is not a section",
                format!("write it as [{section}]"),
            ));
        };
        for key in entries.keys() {
            if !known.contains_key(key) {
                return Err(error(
                    source,
                    Some(&format!("{section}.{key}")),
                    format!("unknown key '{key}' in [{section}]"),
                    format!("keys of [{section}] are: {}", names(known)),
                ));
            }
        }
    }
    Ok(())
}

fn merge(mut base: toml::Table, over: toml::Table) -> toml::Table {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => {
                let merged = merge(std::mem::take(into), from);
                *into = merged;
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
    base
}

fn describe_span(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("look at line {line}; strings need double quotes, sections are [name]")
        }
        None => "check the TOML syntax".to_string(),
    }
}

fn validate(config: &Config, source: &str) -> Result<(), ConfigError> {
    let fail =
        |key: &str, message: String, hint: &str| Err(error(source, Some(key), message, hint));
    if config.node.network.parse::<Network>().is_err() {
        return fail(
            "node.network",
            format!("unknown network '{}'", config.node.network),
            "use mainnet, testnet or devnet",
        );
    }
    if config.node.max_peers == 0 {
        return fail(
            "node.max_peers",
            "must be at least 1".into(),
            "a node without peers cannot follow the chain",
        );
    }
    if config.node.max_inbound_peers > config.node.max_peers {
        return fail(
            "node.max_inbound_peers",
            format!(
                "{} is more than node.max_peers ({})",
                config.node.max_inbound_peers, config.node.max_peers
            ),
            "lower max_inbound_peers or raise max_peers",
        );
    }
    if config.node.messages_per_second_per_peer == 0 {
        return fail(
            "node.messages_per_second_per_peer",
            "must be at least 1".into(),
            "the default is 100",
        );
    }
    if config.node.verify_threads > MAX_VERIFY_THREADS {
        return fail(
            "node.verify_threads",
            format!(
                "{} is more than the {MAX_VERIFY_THREADS} allowed",
                config.node.verify_threads
            ),
            "0 uses every core",
        );
    }
    if config.node.bootstrap_peers.len() > MAX_BOOTSTRAP_ADDRESSES {
        return fail(
            "node.bootstrap_peers",
            format!(
                "{} peers are more than the {MAX_BOOTSTRAP_ADDRESSES} allowed",
                config.node.bootstrap_peers.len()
            ),
            "a few well-connected peers are enough; the rest are learned from them",
        );
    }
    for peer in &config.node.bootstrap_peers {
        if let Err(reason) = peer_address(peer) {
            return fail(
                "node.bootstrap_peers",
                reason,
                "write peers as ip:port, host.name:port or a multiaddress such as \
                 /dns4/seed.example.org/tcp/24100",
            );
        }
    }
    if config.consensus.round_timeout_ms < 100
        || config.consensus.max_round_timeout_ms < config.consensus.round_timeout_ms
    {
        return fail(
            "consensus.max_round_timeout_ms",
            "must be at least round_timeout_ms, which must be at least 100".into(),
            "e.g. round_timeout_ms = 4000 and max_round_timeout_ms = 60000",
        );
    }
    if config.mempool.max_transactions == 0 || config.mempool.max_mb == 0 {
        return fail(
            "mempool",
            "limits must be positive".into(),
            "the defaults are 10000 transactions and 300 MiB",
        );
    }
    if config.mempool.busy_backlog_ms > 60_000 {
        return fail(
            "mempool.busy_backlog_ms",
            format!(
                "{} ms is longer than any payment should wait for finality",
                config.mempool.busy_backlog_ms
            ),
            "the default is 250; 0 turns the limit off",
        );
    }
    if config.masternode.enabled && config.masternode.key_file.is_empty() {
        return fail(
            "masternode.key_file",
            "is empty but masternode.enabled is true".into(),
            "name the node key file",
        );
    }
    if config.rpc.user.is_empty() != config.rpc.password.is_empty() {
        return fail(
            "rpc.password",
            "rpc.user and rpc.password must be set together".into(),
            "set both, or neither to use the cookie file",
        );
    }
    if config.rpc.max_request_bytes < 1024 || config.rpc.max_concurrent_requests == 0 {
        return fail(
            "rpc.max_request_bytes",
            "RPC limits are too small".into(),
            "the defaults are 10485760 bytes and 64 requests",
        );
    }
    if config.rpc.enabled && config.metrics.enabled && config.rpc.bind == config.metrics.bind {
        return fail(
            "metrics.bind",
            format!("{} is also rpc.bind", config.metrics.bind),
            "give metrics its own port",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Config {
        parse(text, "test.toml", Network::Devnet, &[]).unwrap()
    }

    fn parse_err(text: &str, overrides: &[&str]) -> ConfigError {
        let overrides: Vec<Override> = overrides.iter().map(|o| o.parse().unwrap()).collect();
        parse(text, "test.toml", Network::Devnet, &overrides).unwrap_err()
    }

    #[test]
    fn default_file_is_the_defaults() {
        for network in Network::ALL {
            let text = default_file(network);
            let config = parse(&text, "default", network, &[]).unwrap();
            assert_eq!(config, Config::default_for(network));
            assert_eq!(config.network(), network);
            // Every setting is written out, so an operator sees it without reading the docs.
            let written: toml::Table = text.parse().unwrap();
            let defaults = toml::Table::try_from(Config::default_for(network)).unwrap();
            for (section, keys) in &defaults {
                let shown = written[section].as_table().unwrap();
                let missing: Vec<&String> = keys
                    .as_table()
                    .unwrap()
                    .keys()
                    .filter(|key| !shown.contains_key(*key))
                    .collect();
                assert!(missing.is_empty(), "[{section}] leaves out {missing:?}");
            }
        }
    }

    #[test]
    fn missing_keys_take_defaults() {
        let config = parse_ok("[rpc]\nmax_concurrent_requests = 3\n");
        assert_eq!(config.rpc.max_concurrent_requests, 3);
        assert_eq!(config.mempool, Config::default_for(Network::Devnet).mempool);
    }

    #[test]
    fn unknown_keys_and_sections_are_named() {
        let e = parse_err("[rpc]\nbnid = \"127.0.0.1:1\"\n", &[]);
        assert_eq!(e.key.as_deref(), Some("rpc.bnid"));
        assert!(e.hint.contains("bind"), "{e}");
        let e = parse_err("[rcp]\n", &[]);
        assert_eq!(e.key.as_deref(), Some("rcp"));
        assert!(e.to_string().contains("test.toml"));
    }

    #[test]
    fn bad_values_are_reported() {
        let e = parse_err("[node]\nmax_peers = \"many\"\n", &[]);
        assert!(
            e.message.contains("invalid type") || e.message.contains("expected"),
            "{e}"
        );
        assert_eq!(e.key.as_deref(), Some("node.max_peers"), "{e}");
        let e = parse_err("[rpc]\nbind = \"localhost\"\n", &[]);
        assert!(
            e.message.contains("socket address") || e.message.contains("invalid"),
            "{e}"
        );
        let e = parse_err("[log]\nformat = \"xml\"\n", &[]);
        assert!(
            e.message.contains("unknown variant") || e.message.contains("expected"),
            "{e}"
        );
        let e = parse_err("[node\n", &[]);
        assert!(e.hint.contains("line 1"), "{e}");
        let e = parse_err("[node]\nnetwork = \"moonnet\"\n", &[]);
        assert_eq!(e.key.as_deref(), Some("node.network"));
        let e = parse_err("[node]\nverify_threads = 100000\n", &[]);
        assert_eq!(e.key.as_deref(), Some("node.verify_threads"));
        assert_eq!(
            parse_ok("[node]\nverify_threads = 2\n").node.verify_threads,
            2
        );
        let e = parse_err("[mempool]\nbusy_backlog_ms = 600000\n", &[]);
        assert_eq!(e.key.as_deref(), Some("mempool.busy_backlog_ms"));
        assert!(e.hint.contains("0 turns the limit off"), "{e}");
        // A value of the wrong type is named, from the file or the command line.
        let e = parse_err("", &["mempool.busy_min_backlog=-1"]);
        assert_eq!(e.key.as_deref(), Some("mempool.busy_min_backlog"), "{e}");
        let e = parse_err("[mempool]\nmax_mb = 300\nbusy_backlog_ms = \"fast\"\n", &[]);
        assert_eq!(e.key.as_deref(), Some("mempool.busy_backlog_ms"), "{e}");
        let off = parse_ok("[mempool]\nbusy_backlog_ms = 0\nbusy_min_backlog = 0\n").mempool;
        assert_eq!((off.busy_backlog_ms, off.busy_min_backlog), (0, 0));
    }

    #[test]
    fn conflicts_are_reported() {
        let e = parse_err("[node]\nmax_peers = 10\nmax_inbound_peers = 20\n", &[]);
        assert_eq!(e.key.as_deref(), Some("node.max_inbound_peers"));
        let e = parse_err("[rpc]\nuser = \"alice\"\n", &[]);
        assert_eq!(e.key.as_deref(), Some("rpc.password"));
        let e = parse_err("", &["metrics.bind=127.0.0.1:44101"]);
        assert_eq!(e.key.as_deref(), Some("metrics.bind"));
        let e = parse_err(
            "[consensus]\nround_timeout_ms = 5000\nmax_round_timeout_ms = 10\n",
            &[],
        );
        assert_eq!(e.key.as_deref(), Some("consensus.max_round_timeout_ms"));
    }

    #[test]
    fn bootstrap_peers_take_host_names() {
        let config = parse_ok(
            "[node]\nbootstrap_peers = [\"localhost:24100\", \"127.0.0.1:24101\", \
             \"/dns4/seed.example.org/tcp/44100\"]\n",
        );
        let addresses: Vec<String> = config
            .node
            .bootstrap_addresses()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            addresses,
            [
                "/dns/localhost/tcp/24100",
                "/ip4/127.0.0.1/tcp/24101",
                "/dns4/seed.example.org/tcp/44100"
            ]
        );
    }

    #[test]
    fn bad_bootstrap_peers_name_the_file_key_and_peer() {
        for (peer, expected) in [
            ("seed.example.org", "no port"),
            ("seed.example.org:99999", "not a port"),
            ("seed_1:24100", "neither an IP address nor a host name"),
            ("/dns4/seed.example.org/udp/1", "TCP port"),
        ] {
            let e = parse_err(&format!("[node]\nbootstrap_peers = [\"{peer}\"]\n"), &[]);
            assert_eq!(e.key.as_deref(), Some("node.bootstrap_peers"));
            assert!(e.message.contains(peer), "{e}");
            assert!(e.message.contains(expected), "{e}");
            assert!(e.hint.contains("host.name:port"), "{e}");
            assert!(e.to_string().contains("test.toml"), "{e}");
        }
        let many: Vec<String> = (0..=MAX_BOOTSTRAP_ADDRESSES)
            .map(|i| format!("\"10.0.0.1:{}\"", 1000 + i))
            .collect();
        let e = parse_err(
            &format!("[node]\nbootstrap_peers = [{}]\n", many.join(",")),
            &[],
        );
        assert_eq!(e.key.as_deref(), Some("node.bootstrap_peers"));
    }

    #[test]
    fn overrides_win_and_are_checked() {
        let overrides: Vec<Override> = [
            "rpc.enabled=false",
            "log.filter=debug",
            "node.max_peers=8",
            "node.max_inbound_peers=4",
        ]
        .iter()
        .map(|o| o.parse().unwrap())
        .collect();
        let config = parse("[node]\nmax_peers = 50\n", "t", Network::Devnet, &overrides).unwrap();
        assert!(!config.rpc.enabled);
        assert_eq!(config.log.filter, "debug");
        assert_eq!(config.node.max_peers, 8);
        let e = parse_err("", &["rpc.nope=1"]);
        assert_eq!(e.source, "command line");
        assert_eq!(e.key.as_deref(), Some("rpc.nope"));
        assert!("novalue".parse::<Override>().is_err());
        assert!("a.b.c=1".parse::<Override>().is_err());
    }

    #[test]
    fn load_writes_defaults_once() {
        let dir = tempfile::tempdir().unwrap();
        let (config, path) = load(dir.path(), Network::Testnet, &[]).unwrap();
        assert_eq!(config, Config::default_for(Network::Testnet));
        std::fs::write(
            &path,
            "[node]\nnetwork = \"testnet\"\nmax_peers = 7\nmax_inbound_peers = 3\n",
        )
        .unwrap();
        let (config, _) = load(dir.path(), Network::Testnet, &[]).unwrap();
        assert_eq!(config.node.max_peers, 7);
    }
}
