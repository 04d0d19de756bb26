// SQL injection blacklist checker - matches C implementation exactly

use super::sqli_data;

/// Check if a fingerprint is blacklisted
/// This matches libinjection_sqli_blacklist from the C version
pub fn is_blacklisted(fingerprint: &str) -> bool {
    // Match the C version: convert v0 fingerprint to v1 format
    // v0: up to 5 chars, mixed case  
    // v1: '0' prefix, up to 5 more chars, upper case
    
    if fingerprint.is_empty() {
        return false;
    }
    
    // Build the v1 fingerprint ('0' prefix, upper case) on the stack (vendored change: the
    // published crate built a String per check).
    let fp = fingerprint.as_bytes();
    if fp.len() > 15 {
        return false;
    }
    let mut buf = [0u8; 16];
    buf[0] = b'0';
    buf[1..=fp.len()].copy_from_slice(fp);
    // lookup_word_bytes upper-cases, as the published code did here.
    sqli_data::lookup_word_bytes(&buf[..=fp.len()]) == crate::sqli::TokenType::Fingerprint
}
