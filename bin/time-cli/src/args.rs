//! bitcoin-cli-style options: `-name=value` and `-flag`, before the command.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use timecoin_primitives::Network;
use timed::config::{default_data_dir, default_ports};

/// How long sendtoaddress keeps offering a payment to a busy node unless -busywait says.
pub const DEFAULT_BUSY_WAIT: Duration = Duration::from_secs(30);

/// What the options say.
#[derive(Debug, Clone)]
pub struct Options {
    pub network: Network,
    pub data_dir: PathBuf,
    pub rpc_connect: Option<String>,
    pub rpc_port: Option<u16>,
    pub rpc_user: Option<String>,
    pub rpc_password: Option<String>,
    pub wallet: Option<PathBuf>,
    pub wallet_password_file: Option<PathBuf>,
    pub no_wait: bool,
    /// How long sendtoaddress keeps offering a payment to a node that answers "busy".
    pub busy_wait: Duration,
    pub help: bool,
}

impl Options {
    /// Where the node's RPC listens.
    pub fn rpc_address(&self) -> Result<SocketAddr, String> {
        let host = self.rpc_connect.as_deref().unwrap_or("127.0.0.1");
        let ip: IpAddr = host
            .parse()
            .map_err(|_| format!("error: -rpcconnect={host} is not an IP address"))?;
        Ok(SocketAddr::new(
            ip,
            self.rpc_port.unwrap_or(default_ports(self.network).1),
        ))
    }

    /// The wallet file.
    pub fn wallet_path(&self) -> PathBuf {
        self.wallet
            .clone()
            .unwrap_or_else(|| self.data_dir.join("wallet.json"))
    }
}

/// Splits the command line into options and the command with its parameters.
pub fn parse_args(argv: Vec<String>) -> Result<(Options, Vec<String>), String> {
    let mut network = Network::Mainnet;
    let mut data_dir = None;
    let mut options = Options {
        network,
        data_dir: PathBuf::new(),
        rpc_connect: None,
        rpc_port: None,
        rpc_user: None,
        rpc_password: None,
        wallet: None,
        wallet_password_file: None,
        no_wait: false,
        busy_wait: DEFAULT_BUSY_WAIT,
        help: false,
    };
    let mut rest = argv.into_iter().peekable();
    while let Some(arg) = rest.next_if(|a| a.starts_with('-') && a.len() > 1 && !is_number(a)) {
        let body = arg.trim_start_matches('-');
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let need = |value: Option<String>| {
            value.ok_or_else(|| format!("error: -{name} needs a value (-{name}=...)"))
        };
        match name {
            "datadir" => data_dir = Some(PathBuf::from(need(value)?)),
            "rpcconnect" => options.rpc_connect = Some(need(value)?),
            "rpcport" => {
                let text = need(value)?;
                options.rpc_port = Some(
                    text.parse()
                        .map_err(|_| format!("error: -rpcport={text} is not a port number"))?,
                );
            }
            "rpcuser" => options.rpc_user = Some(need(value)?),
            "rpcpassword" => options.rpc_password = Some(need(value)?),
            "testnet" => network = Network::Testnet,
            "devnet" => network = Network::Devnet,
            "chain" => {
                let text = need(value)?;
                network = text.parse().map_err(|e| format!("error: {e}"))?;
            }
            "wallet" => options.wallet = Some(PathBuf::from(need(value)?)),
            "walletpasswordfile" => {
                options.wallet_password_file = Some(PathBuf::from(need(value)?))
            }
            "nowait" => options.no_wait = true,
            "busywait" => {
                let text = need(value)?;
                let seconds: f64 = text
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && (0.0..=3_600.0).contains(s))
                    .ok_or_else(|| {
                        format!("error: -busywait={text} is not a number of seconds (0 to 3600)")
                    })?;
                options.busy_wait = Duration::from_secs_f64(seconds);
            }
            "help" | "h" | "?" => options.help = true,
            other => {
                return Err(format!(
                    "error: unknown option -{other} (see time-cli -help)"
                ));
            }
        }
    }
    options.network = network;
    options.data_dir = data_dir.unwrap_or_else(|| default_data_dir(network));
    Ok((options, rest.collect()))
}

fn is_number(text: &str) -> bool {
    text.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_then_command() {
        let (options, command) = parse_args(strings(&[
            "-devnet",
            "-datadir=/tmp/x",
            "-rpcport=9",
            "getblockhash",
            "-1",
        ]))
        .unwrap();
        assert_eq!(options.network, Network::Devnet);
        assert_eq!(options.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(
            options.rpc_address().unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(command, strings(&["getblockhash", "-1"]));
        assert_eq!(options.wallet_path(), PathBuf::from("/tmp/x/wallet.json"));
    }

    #[test]
    fn defaults_follow_the_network() {
        let (options, _) = parse_args(strings(&["-testnet", "uptime"])).unwrap();
        assert_eq!(
            options.rpc_address().unwrap().port(),
            default_ports(Network::Testnet).1
        );
        assert!(options.data_dir.ends_with(".timecoin/testnet"));
    }

    #[test]
    fn bad_options_are_explained() {
        assert!(
            parse_args(strings(&["-bogus"]))
                .unwrap_err()
                .contains("unknown option -bogus")
        );
        assert!(
            parse_args(strings(&["-rpcport=x"]))
                .unwrap_err()
                .contains("not a port")
        );
        assert!(
            parse_args(strings(&["-datadir"]))
                .unwrap_err()
                .contains("needs a value")
        );
        let (options, _) = parse_args(strings(&["-rpcconnect=nothost", "x"])).unwrap();
        assert!(options.rpc_address().is_err());
    }
}
