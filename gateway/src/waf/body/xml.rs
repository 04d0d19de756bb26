//! Minimal XML for the `XML` variable: text content (`XML:/*`) and attribute values (`XML://@*`).
//! Hand-written because rules only read these two views; a broken document sets `REQBODY_ERROR`.

use crate::waf::variables::RequestData;

/// Fills `XML:/*` and at most `max_attrs` `XML://@*` values; true when there were more.
pub fn process(data: &mut RequestData, body: &[u8], max_attrs: usize) -> bool {
    let mut over = false;
    let mut text = Vec::new();
    let mut attrs = Vec::new();
    let mut depth: i64 = 0;
    let mut seen_root = false;
    let mut i = 0;
    let mut ok = true;
    while i < body.len() {
        if body[i] != b'<' {
            if depth > 0 {
                text.push(body[i]);
            } else if !body[i].is_ascii_whitespace() {
                ok = false;
            }
            i += 1;
            continue;
        }
        let rest = &body[i..];
        if rest.starts_with(b"<!--") {
            match find(rest, b"-->") {
                Some(p) => i += p + 3,
                None => {
                    ok = false;
                    break;
                }
            }
            continue;
        }
        if rest.starts_with(b"<![CDATA[") {
            match find(rest, b"]]>") {
                Some(p) => {
                    text.extend_from_slice(&rest[9..p]);
                    i += p + 3;
                }
                None => {
                    ok = false;
                    break;
                }
            }
            continue;
        }
        let Some(end) = rest.iter().position(|&b| b == b'>') else {
            ok = false;
            break;
        };
        let tag = &rest[1..end];
        i += end + 1;
        if tag.starts_with(b"?") || tag.starts_with(b"!") {
            continue;
        }
        if tag.starts_with(b"/") {
            depth -= 1;
            if depth < 0 {
                ok = false;
            }
            continue;
        }
        // Attribute values: name="v" or name='v'.
        let mut j = 0;
        while j < tag.len() {
            if tag[j] == b'"' || tag[j] == b'\'' {
                let q = tag[j];
                let s = j + 1;
                let e = tag[s..].iter().position(|&b| b == q).map(|p| s + p);
                match e {
                    Some(e) => {
                        if attrs.len() < max_attrs {
                            attrs.push(unescape(&tag[s..e]));
                        } else {
                            over = true;
                        }
                        j = e + 1;
                    }
                    None => {
                        ok = false;
                        break;
                    }
                }
            } else {
                j += 1;
            }
        }
        if !tag.ends_with(b"/") {
            if depth == 0 && seen_root {
                ok = false;
            }
            depth += 1;
        }
        seen_root = true;
    }
    if depth != 0 || !seen_root {
        ok = false;
    }
    if !ok {
        data.reqbody_error = true;
        data.reqbody_error_msg = "XML parsing error".into();
    }
    let e = data.entry(&b"/*"[..], unescape(&text));
    data.xml_text = Some(e);
    for a in attrs {
        let e = data.entry(&b"//@*"[..], a);
        data.xml_attrs.push(e);
    }
    over
}

/// XML's predefined and numeric character references, as a parser hands them over.
fn unescape(v: &[u8]) -> Vec<u8> {
    if !v.contains(&b'&') {
        return v.to_vec();
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'&'
            && let Some(len) = v[i..].iter().take(12).position(|&b| b == b';')
        {
            let name = &v[i + 1..i + len];
            let ch: Option<u32> = match name {
                b"quot" => Some('"' as u32),
                b"amp" => Some('&' as u32),
                b"lt" => Some('<' as u32),
                b"gt" => Some('>' as u32),
                b"apos" => Some('\'' as u32),
                [b'#', b'x' | b'X', hex @ ..] => std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok()),
                [b'#', dec @ ..] => std::str::from_utf8(dec).ok().and_then(|d| d.parse().ok()),
                _ => None,
            };
            if let Some(c) = ch.and_then(char::from_u32) {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += len + 1;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes() {
        let mut d = RequestData::default();
        process(
            &mut d,
            b"<?xml version=\"1.0\"?><a x=\"1\"><b>hi</b><c y='2'/></a>",
            1000,
        );
        assert!(!d.reqbody_error);
        assert_eq!(
            d.xml_text.as_ref().map(|e| e.value.clone()),
            Some(b"hi".to_vec())
        );
        assert_eq!(d.xml_attrs.len(), 2);
        let mut bad = RequestData::default();
        process(&mut bad, b"<a><b></a", 1000);
        assert!(bad.reqbody_error);
    }
}
