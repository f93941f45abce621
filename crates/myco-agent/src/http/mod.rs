//! HTTP pieces shared by the API's routes.

pub mod guard;
pub mod sse;
