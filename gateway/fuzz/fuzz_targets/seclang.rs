//! The SecLang parser and the rule builder (which compiles operators, transformations and
//! actions) on arbitrary rule text: errors are fine, panics are not.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use gateway::waf::{rule, seclang};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file: Arc<Path> = Arc::from(Path::new("fuzz.conf"));
    let Ok(directives) = seclang::parse_text(&file, text) else { return };
    let mut b = rule::Builder::default();
    for d in &directives {
        if b.add(d).is_err() {
            return;
        }
    }
    let _ = b.finish();
});
