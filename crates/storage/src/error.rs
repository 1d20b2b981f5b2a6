//! The one error type of the storage crate. Every message ends with what an operator can do.

use timecoin_primitives::{BlockHash, Height, Network};

/// Why a storage operation failed.
///
/// None of these is a peer's fault. Open-time errors mean the data directory cannot be used as
/// it is; write errors mean the node must stop (the store refuses further writes, so nothing
/// half-applied can follow).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk is full. The last write was not applied.
    #[error(
        "disk full while {context}; the last block was not applied and the store is consistent. \
         hint: free disk space or enable pruning, then restart the node"
    )]
    DiskFull {
        /// What the store was doing.
        context: String,
    },
    /// The operating system or the database engine reported an I/O failure.
    #[error(
        "I/O error while {context}: {message}; the last write was not applied. \
         hint: check the disk and the data directory's permissions, then restart the node"
    )]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        message: String,
    },
    /// The data directory was written by a newer version of the node.
    #[error(
        "the database has schema version {found}, but this node supports at most {supported}. \
         hint: run a newer release of the node, or point it at another data directory"
    )]
    NewerVersion {
        /// The version on disk.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
    /// The data directory was written by an older version whose layout this build cannot
    /// read (there is no in-place upgrade yet).
    #[error(
        "the database has schema version {found}, but this node reads only version {supported} \
         (block layout changed). hint: move the old chain database aside and let the node sync \
         again, or run the older release"
    )]
    OlderVersion {
        /// The version on disk.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The data directory belongs to a different network or chain.
    #[error(
        "the database belongs to {stored_network} with genesis {stored_genesis}, but the node is \
         configured for {network} with genesis {genesis}. hint: check --network, or point the \
         node at the data directory of that network"
    )]
    WrongNetwork {
        /// The network recorded in the database.
        stored_network: Network,
        /// The genesis hash recorded in the database.
        stored_genesis: BlockHash,
        /// The configured network.
        network: Network,
        /// The configured genesis hash.
        genesis: BlockHash,
    },
    /// Stored data contradicts itself, so the database cannot be trusted.
    #[error(
        "the database is corrupt: {what}. hint: restore a backup or resync into an empty data \
         directory; the existing directory was left untouched"
    )]
    Corrupt {
        /// What is inconsistent.
        what: String,
    },
    /// The file holds data that is not a TimeCoin chain database.
    #[error(
        "{what}. hint: point the node at an empty or TimeCoin data directory; existing data is \
         never overwritten"
    )]
    ForeignData {
        /// What was found.
        what: String,
    },
    /// The configured indexes differ from those the database was built with.
    #[error(
        "the database was built with indexes [{stored}] but the node is configured for \
         [{configured}]. hint: use the same index settings, or resync into an empty data \
         directory to change them"
    )]
    IndexesDiffer {
        /// The indexes the database has.
        stored: String,
        /// The indexes configured.
        configured: String,
    },
    /// A query needs an index this database does not keep.
    #[error(
        "the {index} index is turned off for this database. hint: enable it in the configuration \
         of a new data directory and resync"
    )]
    IndexDisabled {
        /// Which index.
        index: &'static str,
    },
    /// The caller asked for something the chain does not allow; a bug in the caller.
    #[error("refused to commit block at height {height}: {reason}")]
    InvalidCommit {
        /// The height of the block offered.
        height: Height,
        /// What is wrong with it.
        reason: String,
    },
    /// An earlier write failed, so the store refuses to continue.
    #[error(
        "the store stopped after an earlier write failure ({cause}). hint: fix the cause and \
         restart the node; it resumes from the last committed block"
    )]
    Halted {
        /// The first failure's message.
        cause: String,
    },
}

/// A [`StorageError::Corrupt`] saying `what` is inconsistent.
pub(crate) fn corrupt(what: impl Into<String>) -> StorageError {
    StorageError::Corrupt { what: what.into() }
}

impl StorageError {
    /// Classifies an I/O error, recognising a full disk.
    pub fn from_io(context: &str, error: &std::io::Error) -> StorageError {
        // ENOSPC (28) and EDQUOT (122 on Linux) both mean "no room"; StorageFull covers the former
        // where the standard library recognises it.
        let full = error.kind() == std::io::ErrorKind::StorageFull
            || error.kind() == std::io::ErrorKind::QuotaExceeded
            || matches!(error.raw_os_error(), Some(28) | Some(122));
        if full {
            StorageError::DiskFull {
                context: context.to_string(),
            }
        } else {
            StorageError::Io {
                context: context.to_string(),
                message: error.to_string(),
            }
        }
    }

    /// Whether this error came from a write that could not be made durable, after which the node
    /// must stop.
    pub fn is_write_failure(&self) -> bool {
        matches!(
            self,
            StorageError::DiskFull { .. } | StorageError::Io { .. }
        )
    }
}

/// The storage crate's result type.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
