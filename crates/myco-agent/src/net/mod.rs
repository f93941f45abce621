//! Network plumbing: the authenticated stream transport between nodes
//! (besides the mesh's UDP socket, which the mesh loop owns), and the
//! bounded HTTP server loop the API and the edge share.

pub mod serve;
pub mod streams;
