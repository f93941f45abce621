//! Node-to-node transport besides the mesh's UDP socket (which the mesh
//! loop owns): the authenticated stream transport.

pub mod streams;
