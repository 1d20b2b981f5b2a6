//! A one-masternode chain on the in-memory disk, for this crate's tests and its dependants':
//! the masternode alone is the whole committee (weight 1, quorum 1), so whatever it accepts is
//! certified at once and it commits blocks on its own.

use timecoin_ledger::{
    ChainParams, GenesisAllocation, GenesisMasternode, GenesisSpec, ParamOverrides, build_genesis,
};
use timecoin_primitives::{
    Address, Amount, Block, BoundedVec, Network, OutPoint, SecretKey, Transaction, TxBody, TxInput,
    TxKind, TxOut,
};
use timecoin_storage::{ChainDb, ChainStore, MemoryBackend, StoreConfig};

use crate::{Action, Command, Input, Node, NodeConfig, Reply, RequestId, init_store};

/// The network of the test chain.
pub const NETWORK: Network = Network::Devnet;
/// The genesis time of the test chain.
pub const START_MS: u64 = 1_767_225_600_000;
/// The fee [`pay`] leaves, in units.
pub const FEE_UNITS: u64 = 100_000;
/// The seed of the masternode's node key; its collateral is owned by seed + 1.
pub const MASTERNODE_SEED: u8 = 200;
/// The seed of the key that genesis funds with 5,000 TIME.
pub const FUNDED_SEED: u8 = 1;

/// A node of the test chain on the in-memory disk.
pub type TestNode = Node<ChainDb<MemoryBackend>>;

/// A deterministic key.
pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes([seed; 32])
}

/// The address paying `key`.
pub fn address(key: &SecretKey) -> Address {
    Address::from_public_key(&key.public_key())
}

/// The genesis: 5,000 TIME to key [`FUNDED_SEED`] and one Bronze masternode, with epochs of
/// `epoch_length_blocks` blocks (the default if `None`).
pub fn genesis(epoch_length_blocks: Option<u64>) -> (Block, ChainParams) {
    let spec = GenesisSpec {
        network: "devnet".into(),
        timestamp_ms: START_MS,
        allocations: vec![GenesisAllocation {
            address: address(&key(FUNDED_SEED)).encode(NETWORK),
            amount: "5000".into(),
        }],
        masternodes: vec![GenesisMasternode {
            owner: address(&key(MASTERNODE_SEED + 1)).encode(NETWORK),
            node_key: key(MASTERNODE_SEED).public_key().to_string(),
            tier: "bronze".into(),
            network_address: "/ip4/127.0.0.1/tcp/24100".into(),
        }],
        overrides: Some(ParamOverrides {
            epoch_length_blocks,
            ..ParamOverrides::default()
        }),
    };
    build_genesis(&spec).expect("the test genesis is valid")
}

/// The output genesis funds, and its amount.
pub fn genesis_coin(genesis: &Block) -> (OutPoint, Amount) {
    let transaction = &genesis.transactions[0];
    (
        OutPoint {
            txid: transaction.txid(),
            index: 0,
        },
        transaction.body.outputs[0].amount,
    )
}

/// Opens a node on `disk` at `now_ms`, writing genesis first if the disk is blank.
pub fn open_on(
    disk: MemoryBackend,
    genesis: &Block,
    params: &ChainParams,
    node_key: Option<SecretKey>,
    now_ms: u64,
) -> (TestNode, Vec<Action>) {
    open_configured(disk, genesis, params, node_key, now_ms, |_, _| {})
}

/// [`open_on`], with `edit` applied to the store's and the node's configurations first.
pub fn open_configured(
    disk: MemoryBackend,
    genesis: &Block,
    params: &ChainParams,
    node_key: Option<SecretKey>,
    now_ms: u64,
    edit: impl FnOnce(&mut StoreConfig, &mut NodeConfig),
) -> (TestNode, Vec<Action>) {
    let mut config = StoreConfig::new(NETWORK, genesis.hash());
    config.cache_bytes = 1 << 20;
    // Flushing inline keeps node tests repeatable to the commit.
    config.background_flush = false;
    let mut node_config = NodeConfig::new(params.clone(), node_key);
    edit(&mut config, &mut node_config);
    let mut store = ChainDb::open(disk, config).expect("the memory disk opens");
    if store.tip().is_none() {
        init_store(&mut store, genesis, params).expect("genesis applies");
    }
    Node::open(store, node_config, now_ms).expect("the node opens")
}

/// A signed one-input payment of `value` from `owner`'s `coin` (worth `amount`) to `to`, the
/// change back to `owner`, leaving [`FEE_UNITS`].
pub fn pay(
    coin: OutPoint,
    amount: Amount,
    owner: &SecretKey,
    to: &SecretKey,
    value: Amount,
) -> Transaction {
    let fee = Amount::from_units(FEE_UNITS).expect("a small fee");
    let change = amount
        .checked_sub(value)
        .and_then(|rest| rest.checked_sub(fee))
        .expect("the coin covers value and fee");
    let body = TxBody {
        kind: TxKind::Transfer,
        inputs: BoundedVec::new(vec![TxInput {
            prevout: coin,
            public_key: owner.public_key(),
        }])
        .expect("one input"),
        outputs: BoundedVec::new(vec![
            TxOut {
                amount: value,
                address: address(to),
            },
            TxOut {
                amount: change,
                address: address(owner),
            },
        ])
        .expect("two outputs"),
    };
    Transaction::sign(body, &[owner], None, NETWORK).expect("the owner signs")
}

/// A payment of `value` from the genesis coin (funded by [`FUNDED_SEED`]'s key) to `to`.
pub fn spend_genesis(to: &SecretKey, value: Amount) -> Transaction {
    let (coin, balance) = genesis_coin(&genesis(Some(4)).0);
    pay(coin, balance, &key(FUNDED_SEED), to, value)
}

/// The reply among `actions`.
pub fn reply(actions: &[Action]) -> Reply {
    actions
        .iter()
        .find_map(|action| match action {
            Action::Reply { reply, .. } => Some(reply.clone()),
            _ => None,
        })
        .expect("a reply")
}

/// Submits `transaction` to `node` as a client does and returns the step's actions.
pub fn submit(node: &mut TestNode, transaction: &Transaction) -> Vec<Action> {
    node.handle(Input::Command {
        id: RequestId(1),
        command: Command::SubmitTransaction(transaction.clone()),
    })
    .expect("the node handles a submission")
}

/// Runs `command` on `node` and returns its reply.
pub fn command(node: &mut TestNode, command: Command) -> Reply {
    let actions = node
        .handle(Input::Command {
            id: RequestId(1),
            command,
        })
        .expect("the node handles a command");
    reply(&actions)
}
