//! Durable store of replicated state (being written).
