//! TLS termination (being written).
