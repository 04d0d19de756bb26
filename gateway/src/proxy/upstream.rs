//! Upstream pools (being written).
