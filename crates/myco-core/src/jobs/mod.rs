//! Jobs in the core (docs to come).

pub mod placement;
