//! Helpers shared by the in-process integration tests (`mod support;` in each test file).

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

pub mod backend;
pub mod pki;
