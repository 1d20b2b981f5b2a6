//! Golden byte vectors: the exact encodings and hashes of a fixed transaction, block header and
//! commit certificate.
//! If one of these fails, the wire or hash format changed, which is a hard fork: change the
//! expected bytes only on purpose, and say so in the commit.

use timecoin_primitives::block::{BLOCK_VERSION, BlockHeader, CommitCertificate, CommitVote};
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
        parent_commit_hash: golden_certificate().hash(),
    }
}

/// The certificate of the golden header's parent (height 41), signed by two fixed keys over a
/// fixed message: the bytes, not the signatures' meaning, are what is frozen here.
fn golden_certificate() -> CommitCertificate {
    let block_hash = BlockHash(Domain::BlockHeader.hash(&[b"golden parent block"]));
    let votes = [4u8, 5]
        .map(|seed| {
            let key = SecretKey::from_bytes([seed; 32]);
            CommitVote {
                voter: key.public_key(),
                signature: key.sign(b"golden commit"),
            }
        })
        .into_iter()
        .collect::<Vec<_>>();
    CommitCertificate {
        height: Height(41),
        view: 2,
        block_hash,
        votes: BoundedVec::new(votes).unwrap(),
    }
}

const TRANSACTION_HEX: &str = "000100000005756a4ce5eef92a9569dbdb529f0b3706b944020a4ba2f4587738922c9445af010000008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c02000000807c814a00000000f9a9725a18f1d31625fad64fc412d4ad9279f7ad8b5e2fe8f3fc90ebca1c939a0700000000000000de1c92f2c833ae18c0e3536e2784951de9eb88bcef867a2b96e2e8fb3238c73201000000ffd71c693e4a283c0d4ac9ad4c756d7079d855f747fca27ae7f509788d5a85665382fd400fa19c83c97153cb35b5be691f6b9e67439799b28b3324a95d0e8102";
const TXID_HEX: &str = "9dae9f75a3bf9f2ef6715a3fce117397f97391ed9cf9439e37143902a3a0be14";
const HEADER_HEX: &str = "010000002a00000000000000667d1f4ca8c0009a95a64bf39163c1293e94ffcf2c5c181b801f008c9b1a3fe4006c50c4a00100000300000000000000ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d16701ebe0f1f88441397afa1af8d42fbeb1e76c71445a954e4df36f8eab291756223ab33ca3829051a40f43ff6840cba7bf7dcfd9f1bdd6d53d001f7c862c77e177a61485be8deaab99ff79dbda706ab2a521339ba024e28387395a7d33a49916";
const BLOCK_HASH_HEX: &str = "cbd5c34791397e04b283d65a44a011dfe2fc6a54c0d991aec16b6670cc51f789";
const CERTIFICATE_HEX: &str = "290000000000000002000000667d1f4ca8c0009a95a64bf39163c1293e94ffcf2c5c181b801f008c9b1a3fe402000000ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c1ceee4399f9c688e168c066e22f02458229922c31c923768436d830501e99bff6a8694249caddf22eaef722c78b9c67e74687f842723c7f50f5f315eb344cf056e7a1cdd29b0b78fd13af4c5598feff4ef2a97166e3ca6f2e4fbfccd80505bf19b0d6415a8eca0d10c9ffa6722b3fe5d8f126e6a51ebf3d610e0a19d87e6bf6d2ac6d8674a6f3e4902d47092f2fd421a97890608f02ff2c851bd965e6fc49809";
const CERTIFICATE_HASH_HEX: &str =
    "77a61485be8deaab99ff79dbda706ab2a521339ba024e28387395a7d33a49916";
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
fn certificate_encoding_is_frozen() {
    let certificate = golden_certificate();
    let bytes = encode(&certificate);
    println!(
        "certificate {}\nhash {}",
        hex::encode(&bytes),
        certificate.hash()
    );
    assert_eq!(hex::encode(&bytes), CERTIFICATE_HEX);
    assert_eq!(certificate.hash().to_string(), CERTIFICATE_HASH_HEX);
    assert_eq!(decode::<CommitCertificate>(&bytes).unwrap(), certificate);
}

#[test]
fn address_text_is_frozen() {
    let address = Address::from_public_key(&SecretKey::from_bytes([2; 32]).public_key());
    println!("address {}", address.encode(Network::Mainnet));
    assert_eq!(address.encode(Network::Mainnet), ADDRESS_TEXT);
}
