//! Spores: the content store and its distribution, and the workflows
//! that keep the replicated index in step with them.
//!
//! - [`store`]: [`SporeStore`], the files on disk (verify, then rename).
//! - [`fetch`]: getting a spore from the nodes that hold it.
//! - [`serve`]: answering other nodes' chunk requests.
//! - [`index`]: the replicated index and trusted publishers (reads).
//! - [`workflow`]: [`Spores`], push, download, trust and garbage
//!   collection as domain operations returning [`SporeFlowError`]; the HTTP
//!   handlers only translate.

pub mod anon;
pub mod fetch;
pub mod index;
mod serve;
pub mod store;
pub mod workflow;

pub use fetch::{FETCH_SLOTS, FetchError};
pub use store::{SporeStore, hex_of};
pub use workflow::{SporeFlowError, Spores};
