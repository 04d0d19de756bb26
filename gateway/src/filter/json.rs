//! Masking configured JSON fields in place: a small scanner finds the byte spans of matching
//! values and replaces each with `"****"`, so the rest of the document keeps its bytes, order
//! and formatting (a parse-and-reserialise would reorder keys and renumber floats).

/// A field rule: a key name at any depth, or a JSON pointer where `*` matches any key or index.
#[derive(Clone, Debug)]
pub enum FieldRule {
    Name(String),
    Pointer(Vec<String>),
}

impl FieldRule {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty field".into());
        }
        if let Some(rest) = s.strip_prefix('/') {
            Ok(FieldRule::Pointer(
                rest.split('/')
                    .map(|t| t.replace("~1", "/").replace("~0", "~"))
                    .collect(),
            ))
        } else {
            Ok(FieldRule::Name(s.to_owned()))
        }
    }

    fn matches(&self, path: &[String]) -> bool {
        match self {
            FieldRule::Name(n) => path.last().is_some_and(|k| k.eq_ignore_ascii_case(n)),
            FieldRule::Pointer(p) => {
                p.len() == path.len() && p.iter().zip(path).all(|(a, b)| a == "*" || a == b)
            }
        }
    }
}

/// Deeper documents are not scanned (stack bound); the caller passes them on unmasked.
const MAX_DEPTH: usize = 128;
const REPLACEMENT: &[u8] = b"\"****\"";

/// The document with matching values replaced; `None` when it is not JSON this scanner can
/// walk (then field masking does not apply).
pub fn mask_fields(doc: &[u8], rules: &[FieldRule]) -> Option<Vec<u8>> {
    let mut spans = Vec::new();
    let mut path = Vec::new();
    let mut s = Scanner { b: doc, i: 0 };
    s.ws();
    s.value(&mut path, rules, &mut spans, 0)?;
    s.ws();
    if s.i != doc.len() {
        return None;
    }
    let mut out = Vec::with_capacity(doc.len());
    let mut at = 0;
    for (start, end) in spans {
        out.extend_from_slice(&doc[at..start]);
        out.extend_from_slice(REPLACEMENT);
        at = end;
    }
    out.extend_from_slice(&doc[at..]);
    Some(out)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    /// A string; returns its raw span (quotes included).
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.i;
        self.eat(b'"')?;
        while let Some(&c) = self.b.get(self.i) {
            self.i += 1;
            match c {
                b'\\' => self.i += 1,
                b'"' => return Some((start, self.i)),
                _ => {}
            }
        }
        None
    }

    fn value(
        &mut self,
        path: &mut Vec<String>,
        rules: &[FieldRule],
        spans: &mut Vec<(usize, usize)>,
        depth: usize,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.b.get(self.i)? {
            b'{' => {
                self.i += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    let (ks, ke) = self.string()?;
                    let key: String = serde_json::from_slice(&self.b[ks..ke]).ok()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    path.push(key);
                    self.member(path, rules, spans, depth)?;
                    path.pop();
                    self.ws();
                    if self.eat(b',').is_some() {
                        continue;
                    }
                    return self.eat(b'}');
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                let mut n = 0usize;
                loop {
                    self.ws();
                    path.push(n.to_string());
                    self.member(path, rules, spans, depth)?;
                    path.pop();
                    n += 1;
                    self.ws();
                    if self.eat(b',').is_some() {
                        continue;
                    }
                    return self.eat(b']');
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                let start = self.i;
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n'
                    )
                {
                    self.i += 1;
                }
                let lit = &self.b[start..self.i];
                let ok = matches!(lit, b"true" | b"false" | b"null")
                    || (!lit.is_empty()
                        && serde_json::from_slice::<serde_json::Number>(lit).is_ok());
                ok.then_some(())
            }
        }
    }

    /// A member value: masked whole when a rule matches its path, else walked.
    fn member(
        &mut self,
        path: &mut Vec<String>,
        rules: &[FieldRule],
        spans: &mut Vec<(usize, usize)>,
        depth: usize,
    ) -> Option<()> {
        if rules.iter().any(|r| r.matches(path)) {
            let start = self.i;
            let mut ignored = Vec::new();
            self.value(path, &[], &mut ignored, depth + 1)?;
            spans.push((start, self.i));
            Some(())
        } else {
            self.value(path, rules, spans, depth + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[&str]) -> Vec<FieldRule> {
        r.iter()
            .map(|s| FieldRule::parse(s).expect("rule"))
            .collect()
    }

    #[test]
    fn names_and_pointers_mask_values_keeping_the_rest() {
        let doc = br#"{ "user": {"name":"Ann", "Password": "hunter2", "ssn": 123456789},
  "items": [ {"secret": {"a": [1,2]}}, {"secret": null} ], "note": "password" }"#;
        let out =
            mask_fields(doc, &rules(&["password", "/items/*/secret", "/user/ssn"])).expect("json");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            r#"{ "user": {"name":"Ann", "Password": "****", "ssn": "****"},
  "items": [ {"secret": "****"}, {"secret": "****"} ], "note": "password" }"#
        );
    }

    #[test]
    fn not_json_is_left_alone() {
        assert!(mask_fields(b"{\"a\": tru}", &rules(&["a"])).is_none());
        assert!(mask_fields(b"{\"a\": 1} trailing", &rules(&["a"])).is_none());
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(mask_fields(deep.as_bytes(), &rules(&["a"])).is_none());
        // Escaped quotes inside strings do not end them.
        let out = mask_fields(br#"{"k\"ey": "v\"al", "pw": "x"}"#, &rules(&["pw"])).expect("json");
        assert_eq!(out, br#"{"k\"ey": "v\"al", "pw": "****"}"#);
    }
}
