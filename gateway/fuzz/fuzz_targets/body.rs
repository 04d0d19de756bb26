//! The request body processors (urlencoded, JSON, multipart, XML) on arbitrary bodies, and the
//! GraphQL reading of a route marked `graphql` (documents replaced by their literal values).
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
    body::graphql::expand_documents(&mut request, true, 1000);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = body::graphql::literals(text);
    }
    let _ = body::parse_cookies(body);
});
