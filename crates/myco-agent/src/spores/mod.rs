//! Spores: the content store and its distribution, and the workflows
//! that keep the replicated index in step with them.
//!
//! - [`store`]: [`SporeStore`], the files on disk (verify, then rename).
//! - [`fetch`]: getting a spore from the nodes that hold it: `download`
//!   asks several sources at once, `inorder` puts their chunks back in
//!   order, `receive` writes and verifies them as they land.
//! - [`serve`]: answering other nodes' chunk requests, from whole files
//!   and from the prefix of a fetch in progress.
//! - [`index`]: the replicated index and trusted publishers (reads).
//! - [`workflow`]: [`Spores`], push, download, trust and garbage
//!   collection as domain operations returning [`SporeFlowError`]; the HTTP
//!   handlers only translate.

pub mod anon;
mod chunk;
mod download;
pub mod fetch;
pub mod index;
mod inorder;
mod receive;
mod serve;
mod source;
pub mod store;
pub mod workflow;

pub use download::{Source, Sources};
pub use fetch::{FETCH_SLOTS, FetchError};
pub use store::{SporeStore, hex_of};
pub use workflow::{SporeFlowError, Spores};
