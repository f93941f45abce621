//! Replicated desired state: the hybrid logical clock, the last-writer-wins
//! replica, and (in `sync`) the protocol that spreads and repairs it.

pub mod hlc;
pub mod replica;
