//! Which genesis block a node starts from.

use std::path::Path;

use timecoin_ledger::{ChainParams, GenesisSpec, build_genesis};
use timecoin_primitives::{Block, Network};

/// The genesis spec file a devnet (or any custom network) keeps in its data directory.
pub const GENESIS_FILE: &str = "genesis.json";

/// The genesis block and chain parameters for `network`: from `data_dir/genesis.json` when it
/// exists, else the network's built-in genesis. Mainnet and testnet have not launched, so they
/// have none yet and a node refuses to start rather than invent one.
pub fn load(data_dir: &Path, network: Network) -> Result<(Block, ChainParams), String> {
    let path = data_dir.join(GENESIS_FILE);
    if !path.exists() {
        return Err(match network {
            Network::Devnet => format!(
                "no {} in {}: a devnet's genesis is made by `timed devnet`, which writes it into each node's data directory",
                GENESIS_FILE,
                data_dir.display()
            ),
            other => format!(
                "{other} has not launched, so there is no built-in genesis; to run a private {other}, put its genesis spec in {}",
                path.display()
            ),
        });
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let spec = GenesisSpec::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if spec.network != network.name() {
        return Err(format!(
            "{} is for {}, but this node runs {network}; use --network={} or another data directory",
            path.display(),
            spec.network,
            spec.network
        ));
    }
    build_genesis(&spec).map_err(|e| format!("{}: {e}", path.display()))
}
