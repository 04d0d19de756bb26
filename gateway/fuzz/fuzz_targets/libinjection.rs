//! `@detectSQLi` / `@detectXSS` on arbitrary bytes: the ported C code indexes slices, and a panic
//! there would be a request-path crash.
#![no_main]

use gateway::waf::operator::{detect_sqli, detect_xss};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (hit, fp) = detect_sqli(data);
    assert!(fp.len() <= 8);
    let _ = hit;
    let _ = detect_xss(data);
});
