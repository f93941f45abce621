//! Jobs in the agent.

pub mod workflow;
