//! Request body processors: what ModSecurity and Coraza turn a body into before phase 2
//! (`ARGS_POST`, `FILES`, `XML`, `REQBODY_ERROR`). URL-encoded forms, JSON (flattened as
//! `json.a.b` / `json.list.0`), multipart (strict, with the flags CRS reads) and minimal XML.

pub mod graphql;
mod json;
mod multipart;
mod xml;

use super::variables::RequestData;

/// Which processor a content type selects by default (ModSecurity's recommended configuration
/// turns on JSON and XML the same way).
pub fn processor_for(content_type: &[u8]) -> Option<&'static str> {
    let ct = String::from_utf8_lossy(content_type).to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime == "application/x-www-form-urlencoded" {
        Some("URLENCODED")
    } else if mime.starts_with("multipart/form-data") {
        Some("MULTIPART")
    } else if mime == "application/json" || mime.ends_with("+json") {
        Some("JSON")
    } else if mime == "text/xml" || mime == "application/xml" || mime.ends_with("+xml") {
        Some("XML")
    } else {
        None
    }
}

/// Runs `processor` over `body`, filling `data`. A body yields at most `max_args` arguments
/// (URL-encoded and JSON arguments, multipart parts, XML attribute values): past that the rest
/// is dropped, `REQBODY_ERROR` is set and `data.args_truncated` says so (ModSecurity's
/// `SecArgumentsLimit`). Every value costs rule evaluations and memory for its transformed
/// forms: a 128 KB JSON array of zeros is 65,535 arguments, half a second of CPU and 170 MB
/// without the limit; 128 KB of XML attributes 21,844 values, 93 ms and 49 MB.
pub fn process(
    data: &mut RequestData,
    processor: &str,
    body: &[u8],
    content_type: &[u8],
    max_args: usize,
) {
    let over = match processor {
        "URLENCODED" => {
            let (args, bad) = parse_urlencoded(body);
            data.urlencoded_error |= bad;
            let total = args.len();
            for (k, v) in args.into_iter().take(max_args) {
                let e = data.arg_entry(k, v);
                data.args_post.push(e);
            }
            total > max_args
        }
        // One more than allowed, to know that there were more.
        "JSON" => match json::flatten(body, max_args.saturating_add(1)) {
            Ok(out) => {
                let over = out.len() > max_args;
                for (k, v) in out.into_iter().take(max_args) {
                    let e = data.arg_entry(k, v);
                    data.args_post.push(e);
                }
                over
            }
            Err(e) => {
                data.reqbody_error = true;
                data.reqbody_error_msg = format!("JSON parsing error: {e}");
                false
            }
        },
        "MULTIPART" => multipart::process(data, body, content_type, max_args),
        "XML" => xml::process(data, body, max_args),
        _ => false,
    };
    if over {
        too_many_args(data, max_args);
    }
}

/// Marks the body as cut at `max_args` arguments (`REQBODY_ERROR`, `args_truncated`).
pub(super) fn too_many_args(data: &mut RequestData, max_args: usize) {
    data.args_truncated = true;
    data.reqbody_error = true;
    data.reqbody_error_msg = format!("too many arguments: more than {max_args}");
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `+` and `%xx` decoded; a broken escape is kept as written and reported.
pub fn url_decode(s: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(s.len());
    let mut bad = false;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(h), Some(l)) = (
                    s.get(i + 1).copied().and_then(hex),
                    s.get(i + 2).copied().and_then(hex),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                bad = true;
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    (out, bad)
}

/// Decoded name/value pairs in order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// `a=1&b=2&c`: pairs in order (a name without `=` has an empty value), and whether an escape
/// was broken.
pub fn parse_urlencoded(s: &[u8]) -> (Pairs, bool) {
    let mut bad = false;
    let mut out = Vec::new();
    for part in s.split(|&b| b == b'&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = match part.iter().position(|&b| b == b'=') {
            Some(p) => (&part[..p], &part[p + 1..]),
            None => (part, &b""[..]),
        };
        let (k, b1) = url_decode(k);
        let (v, b2) = url_decode(v);
        bad |= b1 | b2;
        out.push((k, v));
    }
    (out, bad)
}

/// Cookie header values: `a=1; b=2` (no URL decoding, as ModSecurity v2 version 0 cookies).
pub fn parse_cookies(s: &[u8]) -> Pairs {
    s.split(|&b| b == b';')
        .filter_map(|c| {
            let c = c.trim_ascii();
            if c.is_empty() {
                return None;
            }
            Some(match c.iter().position(|&b| b == b'=') {
                Some(p) => (c[..p].trim_ascii().to_vec(), c[p + 1..].to_vec()),
                None => (c.to_vec(), Vec::new()),
            })
        })
        .collect()
}

/// Arguments as (name, value) text, for assertions.
#[cfg(test)]
pub(super) fn arg_pairs(args: &[super::variables::Entry]) -> Vec<(String, String)> {
    args.iter()
        .map(|e| {
            (
                String::from_utf8_lossy(&e.key).into_owned(),
                String::from_utf8_lossy(&e.value).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_flattens_like_coraza() {
        let mut d = RequestData::default();
        process(
            &mut d,
            "JSON",
            br#"{"a":{"b":"x' or 1=1"},"l":[1,true,null]}"#,
            b"application/json",
            1000,
        );
        let got = arg_pairs(&d.args_post);
        assert_eq!(
            got,
            vec![
                ("json.a.b".into(), "x' or 1=1".into()),
                ("json.l.0".into(), "1".into()),
                ("json.l.1".into(), "true".into()),
                ("json.l.2".into(), "".into()),
            ]
        );
        let mut bad = RequestData::default();
        process(&mut bad, "JSON", b"{nope", b"application/json", 1000);
        assert!(bad.reqbody_error);
    }

    /// Past the argument limit the rest of a JSON or URL-encoded body is dropped and the
    /// request is marked (REQBODY_ERROR, `args_truncated`); at the limit nothing is.
    #[test]
    fn arguments_past_the_limit_are_dropped_and_flagged() {
        let json = |n: usize| format!("[{}]", vec!["0"; n].join(","));
        let mut at = RequestData::default();
        process(&mut at, "JSON", json(3).as_bytes(), b"application/json", 3);
        assert_eq!(at.args_post.len(), 3);
        assert!(!at.args_truncated && !at.reqbody_error);
        let mut over = RequestData::default();
        process(
            &mut over,
            "JSON",
            json(5000).as_bytes(),
            b"application/json",
            3,
        );
        assert_eq!(over.args_post.len(), 3);
        assert!(
            over.args_truncated && over.reqbody_error,
            "{}",
            over.reqbody_error_msg
        );
        let mut form = RequestData::default();
        process(&mut form, "URLENCODED", b"a=1&b=2&c=3&d=4", b"", 3);
        assert_eq!(form.args_post.len(), 3);
        assert!(form.args_truncated);
        // Multipart parts and part header lines, XML attribute values.
        let part = "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n";
        let multipart = |n: usize| format!("{}--b--\r\n", part.repeat(n));
        let ct = b"multipart/form-data; boundary=b";
        let mut at = RequestData::default();
        process(&mut at, "MULTIPART", multipart(3).as_bytes(), ct, 3);
        assert_eq!(at.args_post.len(), 3);
        assert!(!at.args_truncated && !at.reqbody_error);
        let mut over = RequestData::default();
        process(&mut over, "MULTIPART", multipart(4).as_bytes(), ct, 3);
        assert_eq!(over.args_post.len(), 3);
        assert!(over.args_truncated && over.reqbody_error);
        let headers = format!(
            "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n{}\r\nv\r\n--b--\r\n",
            "X-A: 1\r\n".repeat(5)
        );
        let mut many = RequestData::default();
        process(&mut many, "MULTIPART", headers.as_bytes(), ct, 3);
        assert_eq!(many.multipart_part_headers.len(), 3);
        assert!(many.args_truncated);
        let xml = |n: usize| format!("<r {}/>", "a=\"0\" ".repeat(n));
        let mut at = RequestData::default();
        process(&mut at, "XML", xml(3).as_bytes(), b"application/xml", 3);
        assert_eq!(at.xml_attrs.len(), 3);
        assert!(!at.args_truncated && !at.reqbody_error);
        let mut over = RequestData::default();
        process(&mut over, "XML", xml(4).as_bytes(), b"application/xml", 3);
        assert_eq!(over.xml_attrs.len(), 3);
        assert!(over.args_truncated && over.reqbody_error);
    }

    #[test]
    fn urlencoded_pairs() {
        let (pairs, bad) = parse_urlencoded(b"a=1+2&b=%27&c&d=%zz");
        assert_eq!(pairs[0], (b"a".to_vec(), b"1 2".to_vec()));
        assert_eq!(pairs[1], (b"b".to_vec(), b"'".to_vec()));
        assert_eq!(pairs[2], (b"c".to_vec(), b"".to_vec()));
        assert!(bad);
    }

    #[test]
    fn cookies_split() {
        let c = parse_cookies(b"a=1; b = x=y;c");
        assert_eq!(c[1], (b"b".to_vec(), b" x=y".to_vec()));
        assert_eq!(c[2], (b"c".to_vec(), b"".to_vec()));
    }

    #[test]
    fn processors_by_content_type() {
        assert_eq!(
            processor_for(b"application/json; charset=utf-8"),
            Some("JSON")
        );
        assert_eq!(processor_for(b"application/vnd.api+json"), Some("JSON"));
        assert_eq!(
            processor_for(b"multipart/form-data; boundary=x"),
            Some("MULTIPART")
        );
        assert_eq!(processor_for(b"text/plain"), None);
    }
}
