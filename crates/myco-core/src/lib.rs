//! The Myco node core: a deterministic state machine, in the manner of
//! `quinn-proto`.
//!
//! **What it never does:** read a clock, open a socket, spawn a task or a
//! process, touch the disk or draw from a global random source. Time comes in
//! as an argument ([`Time`]) on every call, randomness from the seed given at
//! construction, and everything the node wants done comes out of `poll_*`
//! methods. The agent (`myco-agent`) drives it with real sockets and clocks;
//! the simulator (`myco-sim`) drives the very same code on a virtual network.
//!
//! The API has four kinds of methods on [`Node`]:
//! - `handle_*(now, input)`: a datagram, the timer firing;
//! - commands: [`Node::join`], [`Node::leave`], [`Node::write`],
//!   [`Node::durable`], [`Node::restore`];
//! - `poll_*`: [`Node::poll_transmit`] (datagrams), [`Node::poll_message`]
//!   (stream messages), [`Node::poll_persist`], [`Node::poll_timeout`],
//!   [`Node::poll_event`];
//! - getters: [`Node::members`], [`Node::member`], [`Node::stats`],
//!   [`Node::identity`], [`Node::get`], [`Node::scan`].
//!
//! [`Node`] is a router: it owns one part per concern and routes each
//! input to the part it is for. Membership (module `membership`) is SWIM,
//! from the `foca` crate, wrapped here: foca's packets travel inside Myco
//! frames, sealed in the authenticated envelope of `myco-proto`, after a
//! replay check. Desired state is a set of last-writer-wins tables on
//! hybrid logical clocks ([`state`]), spread by push and repaired by
//! anti-entropy over stream messages (module `replication`).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cache;
mod config;
pub mod edge;
pub mod jobs;
mod membership;
mod node;
mod replication;
pub mod state;
mod stats;
mod time;
mod timers;

pub use config::Config;
pub use membership::{MemberState, MemberView};
pub use node::{Event, Node, NodeSetup, Transmit};
pub use replication::WriteError;
pub use state::replica::Entry;
pub use stats::Stats;
pub use time::Time;
