//! Jobs in the core (docs to come).

pub mod placement;
pub mod reconcile;
pub mod settle;
pub mod supervise;
