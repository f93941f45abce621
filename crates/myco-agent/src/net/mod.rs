//! Network plumbing shared by the agent's servers.

pub mod serve;
