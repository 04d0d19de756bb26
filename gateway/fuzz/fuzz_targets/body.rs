//! The request body processors (urlencoded, JSON, multipart, XML) on arbitrary bodies.
#![no_main]

use gateway::waf::body;
use gateway::waf::variables::RequestData;
use libfuzzer_sys::fuzz_target;

const TYPES: &[&[u8]] = &[
    b"application/x-www-form-urlencoded",
    b"application/json",
    b"multipart/form-data; boundary=XyZ",
    b"text/xml",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let content_type = TYPES[usize::from(pick) % TYPES.len()];
    let Some(processor) = body::processor_for(content_type) else { return };
    let mut request = RequestData::default();
    body::process(&mut request, processor, body, content_type, 1000);
    let _ = body::parse_cookies(body);
});
