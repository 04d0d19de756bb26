//! JSON well-formedness within limits. The nesting depth is measured by a byte scan before
//! parsing: serde_json only stops at its own recursion limit (128) with an error that does not
//! say how deep the document was, and a scan costs one pass over bytes already in memory.

/// Deepest nesting of arrays and objects in `bytes`, stopping early once past `limit`
/// (returns `limit + 1` then). Brackets inside strings do not count.
pub fn depth(bytes: &[u8], limit: usize) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    max = depth;
                    if max > limit {
                        return max;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::depth;

    #[test]
    fn depth_counts_nesting_not_strings() {
        for (doc, want) in [
            (&b"1"[..], 0),
            (b"{}", 1),
            (b"{\"a\":[1,{\"b\":[]}]}", 4),
            (b"{\"a\":\"[[[[{{{{\"}", 1),
            (b"{\"a\":\"\\\"[[[\"}", 1),
            (b"[[],[],[[]]]", 3),
        ] {
            assert_eq!(depth(doc, 100), want, "{}", String::from_utf8_lossy(doc));
        }
        let deep = "[".repeat(10_000);
        assert_eq!(depth(deep.as_bytes(), 32), 33);
    }
}
