//! Golden byte vectors: the exact encodings and hashes of a fixed transaction and block header.
//! If one of these fails, the wire or hash format changed, which is a hard fork: change the
//! expected bytes only on purpose, and say so in the commit.

use timecoin_primitives::block::{BLOCK_VERSION, BlockHeader};
use timecoin_primitives::codec::{BoundedVec, decode, encode};
use timecoin_primitives::hash::{BlockHash, Domain, Txid};
use timecoin_primitives::{
    Address, Amount, Epoch, Height, Network, OutPoint, SecretKey, Timestamp, Transaction, TxBody,
    TxInput, TxKind, TxOut,
};

fn golden_transaction() -> Transaction {
    let spender = SecretKey::from_bytes([1; 32]);
    let recipient = SecretKey::from_bytes([2; 32]).public_key();
    let body = TxBody {
        kind: TxKind::Transfer,
        inputs: BoundedVec::new(vec![TxInput {
            prevout: OutPoint {
                txid: Txid(Domain::Txid.hash(&[b"golden parent"])),
                index: 1,
            },
            public_key: spender.public_key(),
        }])
        .unwrap(),
        outputs: BoundedVec::new(vec![
            TxOut {
                amount: "12.5".parse::<Amount>().unwrap(),
                address: Address::from_public_key(&recipient),
            },
            TxOut {
                amount: Amount::from_units(7).unwrap(),
                address: Address::from_public_key(&spender.public_key()),
            },
        ])
        .unwrap(),
    };
    Transaction::sign(body, &[&spender], None, Network::Mainnet).unwrap()
}

fn golden_header() -> BlockHeader {
    BlockHeader {
        version: BLOCK_VERSION,
        height: Height(42),
        previous_hash: BlockHash(Domain::BlockHeader.hash(&[b"golden parent block"])),
        timestamp: Timestamp(1_790_000_000_000),
        epoch: Epoch(3),
        proposer: SecretKey::from_bytes([3; 32]).public_key(),
        transactions_root: Domain::MerkleNode.hash(&[b"golden root"]),
        utxo_commitment: Domain::UtxoCommitment.hash(&[b"golden utxo"]),
    }
}

const TRANSACTION_HEX: &str = "000100000005756a4ce5eef92a9569dbdb529f0b3706b944020a4ba2f4587738922c9445af010000008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c02000000807c814a00000000f9a9725a18f1d31625fad64fc412d4ad9279f7ad8b5e2fe8f3fc90ebca1c939a0700000000000000de1c92f2c833ae18c0e3536e2784951de9eb88bcef867a2b96e2e8fb3238c73201000000ffd71c693e4a283c0d4ac9ad4c756d7079d855f747fca27ae7f509788d5a85665382fd400fa19c83c97153cb35b5be691f6b9e67439799b28b3324a95d0e8102";
const TXID_HEX: &str = "9dae9f75a3bf9f2ef6715a3fce117397f97391ed9cf9439e37143902a3a0be14";
const HEADER_HEX: &str = "010000002a00000000000000667d1f4ca8c0009a95a64bf39163c1293e94ffcf2c5c181b801f008c9b1a3fe4006c50c4a00100000300000000000000ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d16701ebe0f1f88441397afa1af8d42fbeb1e76c71445a954e4df36f8eab291756223ab33ca3829051a40f43ff6840cba7bf7dcfd9f1bdd6d53d001f7c862c77e1";
const BLOCK_HASH_HEX: &str = "cda0d7f156c1cedd238dcc5d1c9593f5ea410c6ebe044599330d2b2884a7d9a1";
const ADDRESS_TEXT: &str = "time1qru6juj6rrcax939lttyl3qj6jkey70h4k94utlg707fp672rjfe5rzyfyr";

#[test]
fn transaction_encoding_is_frozen() {
    let tx = golden_transaction();
    let bytes = encode(&tx);
    println!("transaction {}\ntxid {}", hex::encode(&bytes), tx.txid());
    assert_eq!(hex::encode(&bytes), TRANSACTION_HEX);
    assert_eq!(tx.txid().to_string(), TXID_HEX);
    assert_eq!(decode::<Transaction>(&bytes).unwrap(), tx);
}

#[test]
fn header_encoding_is_frozen() {
    let header = golden_header();
    let bytes = encode(&header);
    println!("header {}\nhash {}", hex::encode(&bytes), header.hash());
    assert_eq!(hex::encode(&bytes), HEADER_HEX);
    assert_eq!(header.hash().to_string(), BLOCK_HASH_HEX);
    assert_eq!(decode::<BlockHeader>(&bytes).unwrap(), header);
}

#[test]
fn address_text_is_frozen() {
    let address = Address::from_public_key(&SecretKey::from_bytes([2; 32]).public_key());
    println!("address {}", address.encode(Network::Mainnet));
    assert_eq!(address.encode(Network::Mainnet), ADDRESS_TEXT);
}
