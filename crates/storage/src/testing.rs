//! A synthetic chain for tests, benchmarks and the simulator's disk model: blocks of two-in,
//! two-out transfers with correct UTXO changes and commitments, but no signatures (storage
//! never checks them; the ledger does, before storage sees a block).

use std::collections::HashMap;

use timecoin_ledger::{UtxoCommitment, UtxoEntry, UtxoStore};
use timecoin_primitives::{
    Address, Amount, Block, BlockHash, BlockHeader, BoundedVec, Epoch, Hash32, Height, Network,
    OutPoint, PublicKey, Timestamp, Transaction, TxBody, TxInput, TxKind, TxOut,
};

use crate::config::StoreConfig;
use crate::types::{BlockChanges, BlockCommit, ChangeRecorder};

/// Most outputs the reward transaction of a synthetic block creates.
pub const MAX_REWARD_OUTPUTS: usize = 10_000;

/// A small deterministic generator (SplitMix64), so runs are reproducible from a seed.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// 32 random bytes.
    pub fn hash(&mut self) -> Hash32 {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        Hash32(bytes)
    }
}

/// One synthetic block with everything committing it needs.
#[derive(Clone, Debug)]
pub struct TestBlock {
    /// The block.
    pub block: Block,
    /// Its UTXO changes.
    pub changes: BlockChanges,
    /// The commitment after it.
    pub commitment: UtxoCommitment,
}

impl TestBlock {
    /// The commit for this block, without certificate or registry changes.
    pub fn commit(&self) -> BlockCommit<'_> {
        BlockCommit {
            block: &self.block,
            certificate: None,
            changes: &self.changes,
            commitment: &self.commitment,
            masternode_events: &[],
        }
    }
}

/// A synthetic chain and the UTXO set it implies.
#[derive(Debug)]
pub struct TestChain {
    /// The network.
    pub network: Network,
    /// The genesis block.
    pub genesis: TestBlock,
    /// The UTXO set after the last block made.
    pub utxos: HashMap<OutPoint, UtxoEntry>,
    /// The unspent outpoints, for picking inputs at random.
    spendable: Vec<OutPoint>,
    /// The commitment after the last block made.
    pub commitment: UtxoCommitment,
    /// The last block made.
    pub tip: (Height, BlockHash),
    /// The addresses outputs pay to, picked at random.
    pub addresses: Vec<Address>,
    rng: SplitMix,
}

fn header(height: Height, previous: BlockHash, transactions: &[Transaction]) -> BlockHeader {
    let mut block = Block {
        header: BlockHeader {
            version: 1,
            height,
            previous_hash: previous,
            timestamp: Timestamp(1_700_000_000_000 + height.0 * 1000),
            epoch: Epoch(height.0 / 1000),
            proposer: PublicKey::default(),
            transactions_root: Hash32::ZERO,
            utxo_commitment: Hash32::ZERO,
            parent_commit_hash: Hash32::ZERO,
        },
        transactions: BoundedVec::new(transactions.to_vec()).expect("bounded"),
        parent_commit: None,
    };
    block.header.transactions_root = block.compute_transactions_root();
    block.header
}

impl TestChain {
    /// A chain whose genesis creates `genesis_outputs` UTXOs (in reward transactions of up to
    /// [`MAX_REWARD_OUTPUTS`] outputs) paying to `address_count` addresses.
    pub fn new(seed: u64, genesis_outputs: usize, address_count: usize) -> TestChain {
        let mut rng = SplitMix::new(seed);
        let addresses: Vec<Address> = (0..address_count.max(1))
            .map(|_| Address(rng.hash()))
            .collect();
        let mut chain = TestChain {
            network: Network::Devnet,
            genesis: TestBlock {
                block: Block {
                    header: header(Height(0), BlockHash::default(), &[]),
                    transactions: BoundedVec::empty(),
                    parent_commit: None,
                },
                changes: BlockChanges::default(),
                commitment: UtxoCommitment::empty(),
            },
            utxos: HashMap::new(),
            spendable: Vec::new(),
            commitment: UtxoCommitment::empty(),
            tip: (Height(0), BlockHash::default()),
            addresses,
            rng,
        };
        let mut transactions = Vec::new();
        let mut remaining = genesis_outputs;
        let mut nonce = 0u64;
        while remaining > 0 {
            let count = remaining.min(MAX_REWARD_OUTPUTS);
            remaining -= count;
            let outputs: Vec<TxOut> = (0..count).map(|_| chain.output()).collect();
            transactions.push(Transaction::new(
                TxBody {
                    // Distinct heights make the reward bodies, and so their txids, distinct.
                    kind: TxKind::Reward {
                        height: Height(u64::MAX - nonce),
                    },
                    inputs: BoundedVec::empty(),
                    outputs: BoundedVec::new(outputs).expect("bounded"),
                },
                BoundedVec::empty(),
            ));
            nonce += 1;
        }
        chain.genesis = chain.make_block(Height(0), BlockHash::default(), transactions);
        chain.tip = (Height(0), chain.genesis.block.hash());
        chain
    }

    /// Continues the chain from a stored state (after a restart): the UTXO set, tip and
    /// commitment replace the generated ones, and the generator is reseeded from the tip.
    pub fn resume(
        &mut self,
        utxos: HashMap<OutPoint, UtxoEntry>,
        tip: (Height, BlockHash),
        commitment: UtxoCommitment,
    ) {
        let mut spendable: Vec<OutPoint> = utxos.keys().copied().collect();
        spendable.sort_unstable();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&tip.1.as_bytes()[..8]);
        self.rng = SplitMix::new(u64::from_le_bytes(seed));
        self.utxos = utxos;
        self.spendable = spendable;
        self.commitment = commitment;
        self.tip = tip;
    }

    /// Store settings for this chain, with the given cache size.
    pub fn config(&self, cache_bytes: usize) -> StoreConfig {
        let mut config = StoreConfig::new(self.network, self.genesis.block.hash());
        config.cache_bytes = cache_bytes;
        config
    }

    fn output(&mut self) -> TxOut {
        let address = self.addresses[self.rng.below(self.addresses.len() as u64) as usize];
        TxOut {
            amount: Amount::from_units(1 + self.rng.below(1_000_000)).expect("small"),
            address,
        }
    }

    fn take_spendable(&mut self) -> Option<OutPoint> {
        if self.spendable.is_empty() {
            return None;
        }
        let index = self.rng.below(self.spendable.len() as u64) as usize;
        Some(self.spendable.swap_remove(index))
    }

    /// Applies `transactions` to the UTXO set through a [`ChangeRecorder`], as a node would
    /// with the ledger's rules, and builds the block.
    fn make_block(
        &mut self,
        height: Height,
        previous: BlockHash,
        transactions: Vec<Transaction>,
    ) -> TestBlock {
        let mut recorder = ChangeRecorder::new(&self.utxos);
        for transaction in &transactions {
            let txid = transaction.txid();
            for input in transaction.body.inputs.iter() {
                recorder
                    .remove_utxo(&input.prevout)
                    .expect("in memory")
                    .expect("unspent input");
            }
            for (index, output) in transaction.body.outputs.iter().enumerate() {
                let outpoint = OutPoint {
                    txid,
                    index: index as u32,
                };
                let entry = UtxoEntry {
                    output: *output,
                    height,
                    is_collateral: false,
                };
                recorder.insert_utxo(outpoint, entry).expect("in memory");
            }
        }
        let changes = recorder.into_changes().expect("bounded");
        for (outpoint, entry) in changes.spent.iter() {
            self.utxos.remove(outpoint);
            self.commitment.remove(outpoint, entry);
        }
        for (outpoint, entry) in changes.created.iter() {
            self.utxos.insert(*outpoint, *entry);
            self.spendable.push(*outpoint);
            self.commitment.insert(outpoint, entry);
        }
        let mut header = header(height, previous, &transactions);
        header.utxo_commitment = self.commitment.digest();
        TestBlock {
            block: Block {
                header,
                transactions: BoundedVec::new(transactions).expect("bounded"),
                parent_commit: None,
            },
            changes,
            commitment: self.commitment.clone(),
        }
    }

    /// The next block: a reward creating one output, then `transfers` transactions each
    /// spending two random UTXOs into two new ones (fewer if the set runs dry).
    pub fn next_block(&mut self, transfers: usize) -> TestBlock {
        let height = self.tip.0.checked_next().expect("height");
        let mut transactions = vec![Transaction::new(
            TxBody {
                kind: TxKind::Reward { height },
                inputs: BoundedVec::empty(),
                outputs: BoundedVec::new(vec![self.output()]).expect("bounded"),
            },
            BoundedVec::empty(),
        )];
        for _ in 0..transfers {
            let (Some(first), Some(second)) = (self.take_spendable(), self.take_spendable()) else {
                break;
            };
            let inputs = [first, second]
                .map(|prevout| TxInput {
                    prevout,
                    public_key: PublicKey::default(),
                })
                .to_vec();
            transactions.push(Transaction::new(
                TxBody {
                    kind: TxKind::Transfer,
                    inputs: BoundedVec::new(inputs).expect("bounded"),
                    outputs: BoundedVec::new(vec![self.output(), self.output()]).expect("bounded"),
                },
                BoundedVec::empty(),
            ));
        }
        let block = self.make_block(height, self.tip.1, transactions);
        self.tip = (height, block.block.hash());
        block
    }
}
