//! Read-only views of a node's state for RPC and metrics, kept apart from the state machine so
//! that what operators can read grows without touching the consensus logic.
