//! The HTTP edge gateway lands here: the proxy that routes requests from
//! outside the mesh to the jobs that serve them.
