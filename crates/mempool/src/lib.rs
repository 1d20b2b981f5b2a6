//! TimeCoin transaction pool (being written).
