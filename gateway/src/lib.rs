//! The gateway: an API security gateway whose fast path runs in the kernel (XDP) and whose L7
//! half runs here. The binary (`gateway`) is a thin shell over [`cli`].

pub mod admin;
pub mod auth;
pub mod authz;
pub mod bot;
pub mod cli;
pub mod config;
pub mod defense;
pub mod filter;
pub mod proxy;
pub mod ratelimit;
pub mod telemetry;
pub mod tls;
pub mod validate;
pub mod waf;
pub mod xdp;
