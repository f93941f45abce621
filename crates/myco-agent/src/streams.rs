//! Authenticated, encrypted message streams between nodes (being written).
