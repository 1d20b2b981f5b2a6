//! `time-cli`: talk to a `timed` node the way `bitcoin-cli` talks to `bitcoind`, and manage a
//! wallet. See `time-cli -help`.

mod args;
mod wallet;

use std::process::ExitCode;

use serde_json::Value;
use timecoin_rpc::{Error as RpcClientError, RpcClient};

use crate::args::{Options, parse_args};

const USAGE: &str = "\
Usage: time-cli [options] <command> [params]

Options:
  -datadir=<dir>          node data directory (finds the RPC cookie there)
  -rpcconnect=<ip>        node address (default 127.0.0.1)
  -rpcport=<port>         RPC port (default: the network's)
  -rpcuser=<user>         RPC user (default: use the cookie file)
  -rpcpassword=<pw>       RPC password
  -testnet | -devnet      use that network (default mainnet)
  -wallet=<file>          wallet file (default <datadir>/wallet.json)
  -walletpasswordfile=<f> read the wallet password from a file (else $TIME_WALLET_PASSWORD, else
                          ask on the terminal)
  -nowait                 sendtoaddress: return after sending, without waiting for finality
  -busywait=<seconds>     sendtoaddress: how long to keep offering the payment to a node that
                          answers busy (error -50), with pauses of up to 2 s (default 30)
  -help                   this text

Wallet commands (run here, using the node for coins and broadcast):
  createwallet                      create an encrypted wallet
  getnewaddress [label]             new receiving address
  importprivkey <hex> [label]       add an existing key (e.g. the devnet wallet's)
  listaddresses                     the wallet's addresses
  getbalance                        spendable balance (TIME)
  listunspent                       the wallet's unspent outputs
  sendtoaddress <address> <amount>  pay, wait for the finality certificate, print txid and time
  registermasternode <tier> <node-key-file> <network-address>
  deregistermasternode <txid:vout> [address]

Any other command is sent to the node as an RPC call; `time-cli help` lists them.";

/// Methods whose positional parameters at these indexes are JSON rather than strings, as in
/// bitcoin-cli's conversion table: everything else is passed as a string, so a txid that
/// happens to be all digits is not turned into a number.
const JSON_PARAMS: &[(&str, &[usize])] = &[
    ("getblockhash", &[0]),
    ("getblock", &[1]),
    ("getblockheader", &[1]),
    ("getrawtransaction", &[1]),
    ("gettxout", &[1, 2]),
    ("getrawmempool", &[0]),
    ("getaddressutxos", &[0]),
    ("getaddressbalance", &[0]),
    ("testmempoolaccept", &[0]),
    ("gettxoutproof", &[0]),
    ("getblockstats", &[0]),
    ("waitforfinalized", &[0, 1]),
];

fn convert_params(method: &str, raw: &[String]) -> Result<Value, String> {
    let json_indexes = JSON_PARAMS
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, indexes)| *indexes)
        .unwrap_or(&[]);
    raw.iter()
        .enumerate()
        .map(|(index, text)| {
            if json_indexes.contains(&index) {
                serde_json::from_str(text).map_err(|e| {
                    format!("parameter {} of {method} is not valid JSON: {e}", index + 1)
                })
            } else {
                Ok(Value::String(text.clone()))
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// Prints a result as bitcoin-cli does: strings bare, everything else as indented JSON.
fn print_result(value: &Value) {
    match value {
        Value::String(text) => println!("{text}"),
        Value::Null => {}
        other => println!(
            "{}",
            serde_json::to_string_pretty(other).expect("JSON prints")
        ),
    }
}

/// An error for the user, with the exit code to leave with.
pub struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure {
            message: message.to_string(),
            code: 1,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, code: 1 }
    }
}

impl From<RpcClientError> for Failure {
    fn from(error: RpcClientError) -> Failure {
        match error {
            // bitcoin-cli's format, which scripts parse.
            RpcClientError::Rpc(error) => Failure {
                message: format!(
                    "error code: {}\nerror message:\n{}",
                    error.code, error.message
                ),
                code: 1,
            },
            other => Failure {
                message: format!("error: {other}"),
                code: 1,
            },
        }
    }
}

impl From<timecoin_wallet::WalletError> for Failure {
    fn from(error: timecoin_wallet::WalletError) -> Failure {
        Failure {
            message: format!("error: {error}"),
            code: 1,
        }
    }
}

/// The RPC client the options point at.
pub fn client(options: &Options) -> Result<RpcClient, Failure> {
    let address = options.rpc_address()?;
    if let Some(user) = &options.rpc_user {
        let password = options.rpc_password.clone().unwrap_or_default();
        return Ok(RpcClient::new(address, user, &password));
    }
    RpcClient::from_cookie(address, &options.data_dir).map_err(|e| {
        Failure::from(format!(
            "error: cannot read the RPC cookie in {} ({e}); is timed running with this -datadir, or pass -rpcuser/-rpcpassword",
            options.data_dir.display()
        ))
    })
}

/// Calls `method` on the node.
pub fn call(options: &Options, method: &str, params: Value) -> Result<Value, Failure> {
    Ok(try_call(options, method, params)??)
}

/// Calls `method` on the node, and gives back the node's error as it came, for callers that
/// act on its code; the outer error is a client that could not be set up.
pub fn try_call(
    options: &Options,
    method: &str,
    params: Value,
) -> Result<Result<Value, RpcClientError>, Failure> {
    let client = client(options)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("error: cannot start: {e}"))?;
    Ok(runtime.block_on(client.call(method, params)))
}

fn run(argv: Vec<String>) -> Result<(), Failure> {
    let (options, command) = parse_args(argv).map_err(Failure::usage)?;
    if options.help || command.is_empty() {
        println!("{USAGE}");
        return if options.help {
            Ok(())
        } else {
            Err(Failure::usage("error: no command given"))
        };
    }
    let (method, params) = (command[0].as_str(), &command[1..]);
    if let Some(result) = wallet::run(&options, method, params)? {
        print_result(&result);
        return Ok(());
    }
    let params = convert_params(method, params)?;
    print_result(&call(&options, method, params)?);
    Ok(())
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
