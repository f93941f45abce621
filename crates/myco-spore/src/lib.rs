//! Spores (being written).
