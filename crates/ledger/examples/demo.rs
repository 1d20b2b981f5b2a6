//! A walk through the ledger: a devnet genesis, a few signed payments (one spending an output
//! created earlier in the same block), blocks applied with their UTXO commitment, and a double
//! spend being refused.
//!
//! Run with `cargo run --release -p timecoin-ledger --example demo`.

use std::collections::HashMap;

use timecoin_ledger::{
    BlockTemplate, ChainParams, GenesisAllocation, GenesisMasternode, GenesisSpec, LedgerError,
    MasternodeRegistry, UtxoCommitment, UtxoEntry, apply_block, apply_genesis, build_block,
    build_genesis, validate_transaction, verify_block_signatures,
};
use timecoin_primitives::{
    Address, Amount, Block, BlockHeader, BoundedVec, CommitCertificate, Network, OutPoint,
    SecretKey, Timestamp, Transaction, TxBody, TxInput, TxKind, TxOut,
};

const NETWORK: Network = Network::Devnet;

struct Person {
    name: &'static str,
    key: SecretKey,
}

impl Person {
    fn new(name: &'static str, seed: u8) -> Person {
        Person {
            name,
            key: SecretKey::from_bytes([seed; 32]),
        }
    }
    fn address(&self) -> Address {
        Address::from_public_key(&self.key.public_key())
    }
}

/// The ledger state a node keeps: the UTXO set, its commitment, the registry and the tip.
struct Node {
    params: ChainParams,
    utxos: HashMap<OutPoint, UtxoEntry>,
    commitment: UtxoCommitment,
    registry: MasternodeRegistry,
    tip: BlockHeader,
}

impl Node {
    fn coins(&self, person: &Person) -> Vec<(OutPoint, Amount)> {
        let mut coins: Vec<_> = self
            .utxos
            .iter()
            .filter(|(_, entry)| entry.output.address == person.address() && !entry.is_collateral)
            .map(|(outpoint, entry)| (*outpoint, entry.output.amount))
            .collect();
        coins.sort();
        coins
    }

    fn balance(&self, person: &Person) -> Amount {
        Amount::checked_sum(self.coins(person).into_iter().map(|(_, amount)| amount)).unwrap()
    }

    /// Builds the next block, paying the reward to `proposer_owner`, then verifies and applies
    /// it exactly as a node receiving it from a peer would.
    fn mine(
        &mut self,
        transactions: Vec<Transaction>,
        reward_to: &Person,
    ) -> Result<Block, LedgerError> {
        let template = BlockTemplate {
            parent: self.tip.clone(),
            timestamp: Timestamp(self.tip.timestamp.as_millis() + self.params.block_interval_ms),
            proposer: SecretKey::from_bytes([99; 32]).public_key(),
            transactions,
            // From height 2 a block carries its parent's commit certificate. The ledger checks
            // only what it names; its signatures are the consensus crate's to verify, so this
            // demo of the UTXO rules uses an unsigned stand-in.
            parent_commit: (self.tip.height.get() >= 1).then(|| CommitCertificate {
                height: self.tip.height,
                view: 0,
                block_hash: self.tip.hash(),
                votes: BoundedVec::empty(),
            }),
        };
        let block = build_block(
            template,
            |allowed| {
                vec![TxOut {
                    amount: allowed,
                    address: reward_to.address(),
                }]
            },
            &self.utxos,
            &self.commitment,
            &self.registry,
            &self.params,
        )?;
        verify_block_signatures(&block, NETWORK)?;
        let outcome = apply_block(
            &block,
            &self.tip,
            &mut self.utxos,
            &mut self.commitment,
            &self.registry,
            &self.params,
        )?;
        self.registry.apply(outcome.masternode_events());
        self.tip = block.header.clone();
        println!(
            "  block {} applied: {} transactions, fees {} TIME, reward {} TIME (subsidy {} + fees)",
            block.header.height,
            block.transactions.len(),
            outcome.fees,
            outcome.reward_paid,
            outcome.subsidy
        );
        println!(
            "  header commits to UTXO set {}",
            block.header.utxo_commitment
        );
        Ok(block)
    }

    fn print_balances(&self, people: &[&Person]) {
        for person in people {
            println!(
                "    {:<6} {:>16} TIME  ({} coins)",
                person.name,
                self.balance(person).to_string(),
                self.coins(person).len()
            );
        }
    }
}

/// A payment from `from`'s coins: `amount` to `to`, the change back, `fee` to the block.
fn pay(
    from: &Person,
    coins: &[(OutPoint, Amount)],
    to: &Person,
    amount: Amount,
    fee: Amount,
) -> Transaction {
    let total = Amount::checked_sum(coins.iter().map(|(_, a)| *a)).unwrap();
    let change = total
        .checked_sub(amount)
        .and_then(|rest| rest.checked_sub(fee))
        .expect("enough funds");
    let mut outputs = vec![TxOut {
        amount,
        address: to.address(),
    }];
    if !change.is_zero() {
        outputs.push(TxOut {
            amount: change,
            address: from.address(),
        });
    }
    let body = TxBody {
        kind: TxKind::Transfer,
        inputs: BoundedVec::new(
            coins
                .iter()
                .map(|(prevout, _)| TxInput {
                    prevout: *prevout,
                    public_key: from.key.public_key(),
                })
                .collect(),
        )
        .unwrap(),
        outputs: BoundedVec::new(outputs).unwrap(),
    };
    let keys = vec![&from.key; coins.len()];
    Transaction::sign(body, &keys, None, NETWORK).unwrap()
}

fn main() -> Result<(), LedgerError> {
    let alice = Person::new("alice", 1);
    let bob = Person::new("bob", 2);
    let carol = Person::new("carol", 3);
    let miner = Person::new("miner", 4);
    let people = [&alice, &bob, &carol, &miner];
    let fee = Amount::from_units(10_000).unwrap(); // 0.0001 TIME, above devnet's 1 unit/byte

    println!("== TimeCoin ledger demo (devnet) ==\n");
    println!(
        "1. Genesis: Alice gets 1000 TIME, Bob 500 TIME, and one Bronze masternode is registered."
    );
    let spec = GenesisSpec {
        network: "devnet".into(),
        timestamp_ms: 1_767_225_600_000,
        allocations: vec![
            GenesisAllocation {
                address: alice.address().encode(NETWORK),
                amount: "1000".into(),
            },
            GenesisAllocation {
                address: bob.address().encode(NETWORK),
                amount: "500".into(),
            },
        ],
        masternodes: vec![GenesisMasternode {
            owner: miner.address().encode(NETWORK),
            node_key: SecretKey::from_bytes([99; 32]).public_key().to_string(),
            tier: "bronze".into(),
            network_address: "/ip4/127.0.0.1/tcp/24100".into(),
        }],
        overrides: None,
    };
    let (genesis, params) = build_genesis(&spec)?;
    let mut utxos = HashMap::new();
    let mut commitment = UtxoCommitment::empty();
    let outcome = apply_genesis(&genesis, &mut utxos, &mut commitment, &params)?;
    let mut registry = MasternodeRegistry::new();
    registry.apply(outcome.masternode_events());
    println!("  genesis block hash {}", genesis.hash());
    println!(
        "  (built twice from the same spec it is the same: {})",
        build_genesis(&spec)?.0.hash() == genesis.hash()
    );
    println!(
        "  {} masternode registered, its 1000 TIME collateral locked",
        registry.len()
    );
    let mut node = Node {
        params,
        utxos,
        commitment,
        registry,
        tip: genesis.header.clone(),
    };
    node.print_balances(&people);

    println!(
        "\n2. Block 1: Alice pays Bob 100 TIME, and Bob at once pays Carol 40 TIME out of those"
    );
    println!("   100 (the second payment spends an output created earlier in the same block).");
    let to_bob = pay(
        &alice,
        &node.coins(&alice),
        &bob,
        Amount::from_time(100).unwrap(),
        fee,
    );
    let bobs_new_coin = (
        OutPoint {
            txid: to_bob.txid(),
            index: 0,
        },
        Amount::from_time(100).unwrap(),
    );
    let to_carol = pay(
        &bob,
        &[bobs_new_coin],
        &carol,
        Amount::from_time(40).unwrap(),
        fee,
    );
    node.mine(vec![to_bob.clone(), to_carol], &miner)?;
    node.print_balances(&people);

    println!("\n3. Block 2: Carol pays Alice 15 TIME.");
    let to_alice = pay(
        &carol,
        &node.coins(&carol),
        &alice,
        Amount::from_time(15).unwrap(),
        fee,
    );
    node.mine(vec![to_alice], &miner)?;
    node.print_balances(&people);

    println!("\n4. Alice tries to spend her genesis coin again (it went into block 1).");
    let genesis_coin = to_bob.body.inputs[0].prevout;
    let double_spend = pay(
        &alice,
        &[(genesis_coin, Amount::from_time(1000).unwrap())],
        &carol,
        Amount::from_time(900).unwrap(),
        fee,
    );
    match validate_transaction(
        &double_spend,
        &node.utxos,
        &node.registry,
        &node.params,
        node.tip.height,
    ) {
        Ok(_) => println!("  accepted?! (this would be a bug)"),
        Err(error) => println!(
            "  rejected: {error}\n  sender at fault (penalise the peer): {}",
            error.is_peer_fault()
        ),
    }
    match node.mine(vec![double_spend], &miner) {
        Ok(_) => println!("  block accepted?! (this would be a bug)"),
        Err(error) => println!("  a block carrying it is refused too: {error}"),
    }

    println!("\n5. The UTXO commitment, kept up to date block by block, equals a recomputation:");
    let recomputed = UtxoCommitment::from_utxos(node.utxos.iter());
    println!(
        "  incremental {}\n  recomputed  {}",
        node.commitment.digest(),
        recomputed.digest()
    );
    println!("  equal: {}", recomputed == node.commitment);
    let total = Amount::checked_sum(node.utxos.values().map(|entry| entry.output.amount)).unwrap();
    println!(
        "  total value {total} TIME = genesis 2500 TIME (incl. 1000 collateral) + 2 x {} TIME subsidy",
        node.params.subsidy(node.tip.height)
    );
    Ok(())
}
