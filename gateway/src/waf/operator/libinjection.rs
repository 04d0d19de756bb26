//! `@detectSQLi` and `@detectXSS`: libinjection semantics through the pure-Rust `libinjectionrs`.

/// Whether `input` is SQL injection per libinjection, and its fingerprint (for TX.0).
pub fn detect_sqli(input: &[u8]) -> (bool, Vec<u8>) {
    let r = libinjectionrs::detect_sqli(input);
    let fp = r
        .fingerprint
        .as_ref()
        .map(|f| f.as_str().as_bytes().to_vec())
        .unwrap_or_default();
    (r.is_injection(), fp)
}

/// Whether `input` is XSS per libinjection.
pub fn detect_xss(input: &[u8]) -> bool {
    libinjectionrs::detect_xss(input).is_injection()
}
