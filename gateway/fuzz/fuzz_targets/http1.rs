//! The gateway's own HTTP/1.1 request parser against hyper's on arbitrary connection input:
//! every request the own path serves must be the request hyper reads from the same bytes
//! (request smuggling starts where two parsers disagree).
#![no_main]

use gateway::proxy::http1::differential;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = differential::check(data) {
        panic!("{e}");
    }
});
