//! `multipart/form-data`, strict: fields become `ARGS_POST`, files `FILES`/`FILES_NAMES`, every
//! part header `MULTIPART_PART_HEADERS`, and anything ModSecurity calls suspicious sets its
//! `MULTIPART_*` flag (and `MULTIPART_STRICT_ERROR`).

use crate::waf::variables::RequestData;

fn boundary_of(content_type: &[u8], data: &mut RequestData) -> Option<Vec<u8>> {
    let ct = String::from_utf8_lossy(content_type);
    let lower = ct.to_ascii_lowercase();
    let pos = lower.find("boundary")?;
    let rest = ct[pos + 8..].trim_start();
    if rest.len() != ct[pos + 8..].len() {
        data.multipart.boundary_whitespace = true;
    }
    let rest = rest.strip_prefix('=')?;
    if rest.starts_with([' ', '\t']) {
        data.multipart.boundary_whitespace = true;
    }
    let rest = rest.trim_start();
    let b = if let Some(q) = rest.strip_prefix('"') {
        data.multipart.boundary_quoted = true;
        q.split('"').next().unwrap_or("")
    } else {
        rest.split([';', ' ', ',']).next().unwrap_or("")
    };
    if b.is_empty() {
        return None;
    }
    Some(b.as_bytes().to_vec())
}

/// A parameter of a Content-Disposition header; flags bad quoting.
fn disposition_param(v: &[u8], name: &str, data: &mut RequestData) -> Option<Vec<u8>> {
    let s = v;
    let mut i = 0;
    while i < s.len() {
        // Find "name=" at a parameter start.
        let at_start = i == 0 || s[i - 1] == b';' || s[i - 1] == b' ' || s[i - 1] == b'\t';
        if at_start
            && s.len() > i + name.len()
            && s[i..i + name.len()].eq_ignore_ascii_case(name.as_bytes())
        {
            let mut j = i + name.len();
            while j < s.len() && s[j] == b' ' {
                j += 1;
            }
            if j < s.len() && s[j] == b'=' {
                j += 1;
                while j < s.len() && s[j] == b' ' {
                    j += 1;
                }
                if j < s.len() && s[j] == b'"' {
                    let mut out = Vec::new();
                    j += 1;
                    while j < s.len() && s[j] != b'"' {
                        // Only `\"` and `\\` are escapes; other backslashes stay (a Windows
                        // path as file name), as in ModSecurity.
                        if s[j] == b'\\' && j + 1 < s.len() && matches!(s[j + 1], b'"' | b'\\') {
                            j += 1;
                        }
                        out.push(s[j]);
                        j += 1;
                    }
                    if j >= s.len() {
                        data.multipart.invalid_quoting = true;
                    }
                    return Some(out);
                }
                if j < s.len() && s[j] == b'\'' {
                    data.multipart.invalid_quoting = true;
                }
                let end = s[j..]
                    .iter()
                    .position(|&b| b == b';')
                    .map_or(s.len(), |p| j + p);
                return Some(s[j..end].trim_ascii().to_vec());
            }
        }
        i += 1;
    }
    None
}

/// Fills the multipart variables from at most `max_parts` parts; true when there were more.
pub fn process(data: &mut RequestData, body: &[u8], content_type: &[u8], max_parts: usize) -> bool {
    let Some(boundary) = boundary_of(content_type, data) else {
        data.reqbody_error = true;
        data.reqbody_error_msg = "Multipart: invalid boundary".into();
        data.multipart.strict_error = true;
        return false;
    };
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(&boundary);

    // Split into lines keeping track of line endings.
    let mut parts: Vec<(Vec<Vec<u8>>, Vec<u8>)> = Vec::new();
    let mut state = 0u8; // 0 before first boundary, 1 headers, 2 content, 3 after final
    let mut headers: Vec<Vec<u8>> = Vec::new();
    let mut content: Vec<u8> = Vec::new();
    let mut pending_nl: &[u8] = b"";
    let (mut saw_crlf, mut saw_lf) = (false, false);
    let mut closed = false;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| pos + p);
        let (line, nl): (&[u8], &[u8]) = match end {
            Some(e) if e > pos && body[e - 1] == b'\r' => (&body[pos..e - 1], b"\r\n"),
            Some(e) => (&body[pos..e], b"\n"),
            None => (&body[pos..], b""),
        };
        match nl {
            b"\r\n" => saw_crlf = true,
            b"\n" => saw_lf = true,
            _ => {}
        }
        pos = end.map_or(body.len(), |e| e + 1);
        if state == 3 {
            if !line.trim_ascii().is_empty() {
                data.multipart.data_after = true;
            }
            continue;
        }
        if line.starts_with(&delim) {
            let tail = &line[delim.len()..];
            let is_final = tail.starts_with(b"--");
            let rest = if is_final { &tail[2..] } else { tail };
            if !rest.trim_ascii().is_empty() {
                data.multipart.unmatched_boundary = true;
            } else {
                if state == 2 || state == 1 {
                    parts.push((std::mem::take(&mut headers), std::mem::take(&mut content)));
                }
                pending_nl = b"";
                state = if is_final { 3 } else { 1 };
                closed = is_final;
                continue;
            }
        } else if line.starts_with(b"--") && state != 0 && line.len() > 2 {
            // A boundary-looking line that is not ours.
            if line[2..].starts_with(&boundary[..boundary.len().min(line.len() - 2)]) {
                data.multipart.unmatched_boundary = true;
            }
        }
        match state {
            0 => {
                if !line.trim_ascii().is_empty() {
                    data.multipart.data_before = true;
                }
            }
            1 => {
                if line.is_empty() {
                    state = 2;
                } else if line[0] == b' ' || line[0] == b'\t' {
                    data.multipart.header_folding = true;
                    match headers.last_mut() {
                        Some(h) => h.extend_from_slice(line),
                        None => data.multipart.invalid_header_folding = true,
                    }
                } else {
                    headers.push(line.to_vec());
                }
            }
            _ => {
                content.extend_from_slice(pending_nl);
                content.extend_from_slice(line);
                pending_nl = nl;
            }
        }
    }
    if saw_lf {
        data.multipart.lf_line = true;
        if saw_crlf {
            data.multipart.crlf_lf_lines = true;
        }
    }
    if !closed {
        data.multipart.unmatched_boundary = true;
        data.reqbody_error = true;
        data.reqbody_error_msg = "Multipart: final boundary missing".into();
    }
    let mut combined = 0u64;
    // Parts, and header lines over all parts (one MULTIPART_PART_HEADERS value each), count
    // against the limit.
    let mut over = parts.len() > max_parts;
    parts.truncate(max_parts);
    let mut header_values = 0;
    for (hdrs, content) in parts {
        let mut name = None;
        let mut filename = None;
        let mut disposition = false;
        for h in &hdrs {
            let Some(colon) = h.iter().position(|&b| b == b':') else {
                data.multipart.invalid_part = true;
                continue;
            };
            let (k, v) = (&h[..colon], h[colon + 1..].trim_ascii());
            if k.trim_ascii().eq_ignore_ascii_case(b"content-disposition") {
                disposition = true;
                if !v.to_ascii_lowercase().starts_with(b"form-data") {
                    data.multipart.invalid_part = true;
                }
                let after = &v[v.len().min(9)..];
                if !after.trim_ascii().is_empty() && !after.trim_ascii_start().starts_with(b";") {
                    data.multipart.missing_semicolon = true;
                }
                name = disposition_param(v, "name", data);
                filename = disposition_param(v, "filename", data)
                    .or_else(|| disposition_param(v, "filename*", data));
            }
        }
        if !disposition {
            data.multipart.invalid_part = true;
        }
        let name = name.unwrap_or_default();
        for h in &hdrs {
            if header_values == max_parts {
                over = true;
                break;
            }
            header_values += 1;
            let e = data.entry(name.clone(), h.clone());
            data.multipart_part_headers.push(e);
        }
        match filename {
            Some(f) => {
                combined += content.len() as u64;
                let e = data.entry(name.clone(), f);
                data.files.push(e);
                let e = data.entry(name, content.len().to_string());
                data.files_sizes.push(e);
            }
            None => {
                let e = data.entry(name, content);
                data.args_post.push(e);
            }
        }
    }
    data.files_combined_size = combined;
    let m = &data.multipart;
    if m.boundary_quoted
        || m.boundary_whitespace
        || m.data_before
        || m.data_after
        || m.header_folding
        || m.lf_line
        || m.missing_semicolon
        || m.invalid_quoting
        || m.invalid_part
        || m.invalid_header_folding
        || m.file_limit_exceeded
        || data.reqbody_error
    {
        data.multipart.strict_error = true;
    }
    over
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_files_and_flags() {
        let body = b"--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--X\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php\r\n--X--\r\n";
        let mut d = RequestData::default();
        process(&mut d, body, b"multipart/form-data; boundary=X", 1000);
        assert!(!d.reqbody_error);
        assert!(!d.multipart.strict_error, "{:?}", d.multipart);
        assert_eq!(d.args_post.len(), 1);
        assert_eq!(d.args_post[0].value, b"hello");
        assert_eq!(d.files[0].value, b"x.php");
        assert_eq!(d.multipart_part_headers.len(), 3);

        let mut broken = RequestData::default();
        process(
            &mut broken,
            b"junk\r\n--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n",
            b"multipart/form-data; boundary=X",
            1000,
        );
        assert!(broken.multipart.data_before);
        assert!(broken.reqbody_error);
        assert!(broken.multipart.strict_error);
    }
}
