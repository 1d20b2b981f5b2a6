//! TimeCoin's consensus data types.
//!
//! Everything that is hashed, signed or sent between nodes is defined here, together with its one
//! canonical binary encoding ([`codec`]). Nothing in this crate touches state: the rules that relate
//! these values to the UTXO set live in `timecoin-ledger`.

pub mod address;
pub mod amount;
pub mod block;
pub mod codec;
pub mod fast;
pub mod hash;
pub mod keys;
pub mod merkle;
pub mod network;
pub mod quantities;
pub mod transaction;

pub use address::{Address, AddressError};
pub use amount::{Amount, AmountError};
pub use block::{Block, BlockHeader, CommitCertificate, CommitVote};
pub use codec::{
    BoundedBytes, BoundedString, BoundedVec, DecodeError, decode, encode, encoded_len,
};
pub use fast::{FastMap, FastSet};
pub use hash::{BlockHash, Hash32, Txid};
pub use keys::{PublicKey, SecretKey, Signature, SignatureError};
pub use network::Network;
pub use quantities::{Epoch, Height, Timestamp};
pub use transaction::{OutPoint, Tier, Transaction, TxBody, TxInput, TxKind, TxOut};
