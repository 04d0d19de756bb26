//! The gateway's own HTTP/1.1 readers against hyper's on arbitrary input: every request the
//! proxy's own server path serves must be the request hyper's server reads from the same bytes,
//! and every upstream response its client reads must be the response hyper's client reads
//! (request smuggling and response desync start where two parsers disagree). The first byte
//! picks the side (and, for a response, whether the request was a HEAD).
#![no_main]

use gateway::proxy::{http1::differential as request, upstream::h1_differential as response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else { return };
    let verdict = match pick % 3 {
        0 => request::check(input),
        1 => response::check(input, false),
        _ => response::check(input, true),
    };
    if let Err(e) = verdict {
        panic!("{e}");
    }
});
