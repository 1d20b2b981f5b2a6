//! A small devnet chain for tests: genesis from a spec, signed transfers, blocks built and applied
//! through the public API exactly as a node would.

#![allow(dead_code)]

use std::collections::HashMap;

use timecoin_ledger::{
    BlockOutcome, BlockTemplate, BlockUndo, ChainParams, GenesisAllocation, GenesisMasternode,
    GenesisSpec, LedgerError, MasternodeRegistry, UtxoCommitment, UtxoEntry, apply_block,
    apply_genesis, build_block, build_genesis, undo_block, verify_block_signatures,
};
use timecoin_primitives::{
    Address, Amount, Block, BlockHeader, BoundedString, BoundedVec, CommitCertificate, Network,
    OutPoint, PublicKey, SecretKey, Tier, Timestamp, Transaction, TxBody, TxInput, TxKind, TxOut,
};

pub const NETWORK: Network = Network::Devnet;

/// A stand-in for the commit certificate of `parent`, which a child at height 2 or more must
/// carry. The ledger checks only what it names and that the header commits to it; its
/// signatures are the node's business (the consensus crate verifies them), so none are needed.
pub fn parent_commit(parent: &BlockHeader) -> Option<CommitCertificate> {
    (parent.height.get() >= 1).then(|| CommitCertificate {
        height: parent.height,
        view: 0,
        block_hash: parent.hash(),
        votes: BoundedVec::empty(),
    })
}

/// A deterministic key.
pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes([seed; 32])
}

pub fn address(key: &SecretKey) -> Address {
    Address::from_public_key(&key.public_key())
}

pub fn time(whole: u64) -> Amount {
    Amount::from_time(whole).unwrap()
}

pub fn units(units: u64) -> Amount {
    Amount::from_units(units).unwrap()
}

/// A fee comfortably above devnet's 1 unit/byte for any transaction the tests build.
pub fn fee() -> Amount {
    units(100_000)
}

/// The key of the genesis masternode.
pub fn genesis_node_key() -> SecretKey {
    key(200)
}

/// The owner of the genesis masternode's collateral.
pub fn genesis_node_owner() -> SecretKey {
    key(201)
}

/// The address block rewards go to.
pub fn miner() -> SecretKey {
    key(250)
}

/// A devnet spec: `balances[i]` whole TIME for `key(i + 1)`, and one Bronze masternode.
pub fn spec(balances: &[u64]) -> GenesisSpec {
    GenesisSpec {
        network: "devnet".into(),
        timestamp_ms: 1_767_225_600_000,
        allocations: balances
            .iter()
            .enumerate()
            .map(|(i, amount)| GenesisAllocation {
                address: address(&key(i as u8 + 1)).encode(NETWORK),
                amount: amount.to_string(),
            })
            .collect(),
        masternodes: vec![GenesisMasternode {
            owner: address(&genesis_node_owner()).encode(NETWORK),
            node_key: genesis_node_key().public_key().to_string(),
            tier: "bronze".into(),
            network_address: "/ip4/127.0.0.1/tcp/24100".into(),
        }],
        overrides: None,
    }
}

pub fn transfer_body(inputs: &[(OutPoint, &SecretKey)], outputs: &[(Address, Amount)]) -> TxBody {
    TxBody {
        kind: TxKind::Transfer,
        inputs: BoundedVec::new(
            inputs
                .iter()
                .map(|(prevout, key)| TxInput {
                    prevout: *prevout,
                    public_key: key.public_key(),
                })
                .collect(),
        )
        .unwrap(),
        outputs: BoundedVec::new(
            outputs
                .iter()
                .map(|(address, amount)| TxOut {
                    amount: *amount,
                    address: *address,
                })
                .collect(),
        )
        .unwrap(),
    }
}

/// Signs `body` with each input's key (and `node_key` for a registration).
pub fn sign(body: TxBody, keys: &[&SecretKey], node_key: Option<&SecretKey>) -> Transaction {
    Transaction::sign(body, keys, node_key, NETWORK).unwrap()
}

pub fn transfer(inputs: &[(OutPoint, &SecretKey)], outputs: &[(Address, Amount)]) -> Transaction {
    let keys: Vec<&SecretKey> = inputs.iter().map(|(_, key)| *key).collect();
    sign(transfer_body(inputs, outputs), &keys, None)
}

pub fn registration_body(
    inputs: &[(OutPoint, &SecretKey)],
    outputs: &[(Address, Amount)],
    collateral_output: u32,
    node_key: PublicKey,
    tier: Tier,
) -> TxBody {
    let mut body = transfer_body(inputs, outputs);
    body.kind = TxKind::RegisterMasternode {
        collateral_output,
        node_key,
        tier,
        network_address: BoundedString::new("/dns4/node.example/tcp/24100").unwrap(),
    };
    body
}

/// A chain on an in-memory UTXO set.
pub struct Chain {
    pub params: ChainParams,
    pub genesis: Block,
    pub utxos: HashMap<OutPoint, UtxoEntry>,
    pub commitment: UtxoCommitment,
    pub registry: MasternodeRegistry,
    pub tip: BlockHeader,
    pub undos: Vec<BlockUndo>,
    pub headers: Vec<BlockHeader>,
}

impl Chain {
    pub fn new(balances: &[u64]) -> Chain {
        Chain::from_spec(&spec(balances))
    }

    pub fn from_spec(spec: &GenesisSpec) -> Chain {
        let (genesis, params) = build_genesis(spec).unwrap();
        let mut utxos = HashMap::new();
        let mut commitment = UtxoCommitment::empty();
        let outcome = apply_genesis(&genesis, &mut utxos, &mut commitment, &params).unwrap();
        let mut registry = MasternodeRegistry::new();
        registry.apply(outcome.masternode_events());
        Chain {
            params,
            tip: genesis.header.clone(),
            headers: vec![genesis.header.clone()],
            genesis,
            utxos,
            commitment,
            registry,
            undos: Vec::new(),
        }
    }

    /// The UTXOs paying `key`, in outpoint order.
    pub fn coins(&self, key: &SecretKey) -> Vec<(OutPoint, UtxoEntry)> {
        let owner = address(key);
        let mut coins: Vec<_> = self
            .utxos
            .iter()
            .filter(|(_, entry)| entry.output.address == owner)
            .map(|(outpoint, entry)| (*outpoint, *entry))
            .collect();
        coins.sort_by_key(|(outpoint, _)| *outpoint);
        coins
    }

    pub fn balance(&self, key: &SecretKey) -> Amount {
        Amount::checked_sum(self.coins(key).iter().map(|(_, entry)| entry.output.amount)).unwrap()
    }

    pub fn total_value(&self) -> u128 {
        self.utxos
            .values()
            .map(|entry| u128::from(entry.output.amount.units()))
            .sum()
    }

    /// A valid next block with `transactions`, its reward (subsidy plus fees) paid to the miner.
    pub fn build(&self, transactions: Vec<Transaction>) -> Result<Block, LedgerError> {
        let template = BlockTemplate {
            parent: self.tip.clone(),
            timestamp: Timestamp(self.tip.timestamp.as_millis() + self.params.block_interval_ms),
            proposer: genesis_node_key().public_key(),
            transactions,
            parent_commit: parent_commit(&self.tip),
        };
        build_block(
            template,
            |allowed| {
                if allowed.is_zero() {
                    vec![]
                } else {
                    vec![TxOut {
                        amount: allowed,
                        address: address(&miner()),
                    }]
                }
            },
            &self.utxos,
            &self.commitment,
            &self.registry,
            &self.params,
        )
    }

    /// Verifies and applies `block` on the tip, as a node would.
    pub fn apply(&mut self, block: &Block) -> Result<BlockOutcome, LedgerError> {
        verify_block_signatures(block, NETWORK)?;
        let outcome = apply_block(
            block,
            &self.tip,
            &mut self.utxos,
            &mut self.commitment,
            &self.registry,
            &self.params,
        )?;
        self.registry.apply(outcome.masternode_events());
        self.tip = block.header.clone();
        self.headers.push(block.header.clone());
        self.undos.push(outcome.undo.clone());
        Ok(outcome)
    }

    /// Builds and applies a block, panicking if it is invalid.
    pub fn mine(&mut self, transactions: Vec<Transaction>) -> BlockOutcome {
        let block = self.build(transactions).unwrap();
        self.apply(&block).unwrap()
    }

    /// Undoes the tip block.
    pub fn undo_tip(&mut self) {
        let undo = self.undos.pop().expect("a block to undo");
        undo_block(&undo, &mut self.utxos, &mut self.commitment).unwrap();
        self.registry.undo(&undo.masternode_events);
        self.headers.pop();
        self.tip = self.headers.last().unwrap().clone();
    }
}
