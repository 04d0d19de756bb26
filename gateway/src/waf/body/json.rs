//! JSON bodies flattened into arguments while they are parsed (`json.a.b`, `json.list.0`), in
//! document order as ModSecurity's and Coraza's processors yield them.
//!
//! A serde visitor rather than a `serde_json::Value` walked afterwards: the tree cost a map node,
//! a key string and a value per member only to be thrown away, ~12 % of a 20 KB JSON
//! request's WAF instructions (callgrind). serde_json's recursion limit (128) bounds the depth.

use std::fmt::{self, Write};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The leaves of `body` as (name, value), at most `cap` of them; the whole body is still
/// parsed, so a syntax error anywhere is an error.
pub(super) fn flatten(
    body: &[u8],
    cap: usize,
) -> Result<Vec<(String, Vec<u8>)>, serde_json::Error> {
    let mut out = Vec::new();
    let mut prefix = String::from("json");
    let mut de = serde_json::Deserializer::from_slice(body);
    Leaves {
        prefix: &mut prefix,
        out: &mut out,
        cap,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

/// One JSON value whose leaves go to `out` under `prefix`.
struct Leaves<'a> {
    prefix: &'a mut String,
    out: &'a mut Vec<(String, Vec<u8>)>,
    cap: usize,
}

impl Leaves<'_> {
    fn leaf(self, value: Vec<u8>) {
        if self.out.len() < self.cap {
            self.out.push((self.prefix.clone(), value));
        }
    }

    fn child(&mut self) -> Leaves<'_> {
        Leaves {
            prefix: self.prefix,
            out: self.out,
            cap: self.cap,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A member name appended to the prefix as it is read: no string of its own.
struct Key<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push('.');
        self.0.push_str(v);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Leaves<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let len = self.prefix.len();
        while map.next_key_seed(Key(self.prefix))?.is_some() {
            map.next_value_seed(self.child())?;
            self.prefix.truncate(len);
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let len = self.prefix.len();
        let mut i = 0usize;
        loop {
            // Writing to a String cannot fail.
            let _ = write!(self.prefix, ".{i}");
            if seq.next_element_seed(self.child())?.is_none() {
                self.prefix.truncate(len);
                return Ok(());
            }
            self.prefix.truncate(len);
            i += 1;
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(v.as_bytes().to_vec());
        Ok(())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<(), E> {
        self.leaf(v.into_bytes());
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(v.to_string().into_bytes());
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(v.to_string().into_bytes());
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // As `serde_json::Number` prints it (the text the tree-based processor yielded).
        let text = serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string());
        self.leaf(text.into_bytes());
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(if v {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        });
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.leaf(Vec::new());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(body: &str) -> Vec<(String, String)> {
        flatten(body.as_bytes(), usize::MAX)
            .expect("valid JSON")
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()
    }

    /// Members come out in the order the client wrote them, duplicates included (a tree keyed
    /// by name sorted them and kept only the last of two equal names, which an attacker could
    /// use to hide a value behind a benign twin).
    #[test]
    fn members_in_document_order_with_duplicates() {
        assert_eq!(
            leaves(r#"{"z":"1","a":{"y":[true,{"k":null}]},"z":"x' or 1=1"}"#),
            [
                ("json.z", "1"),
                ("json.a.y.0", "true"),
                ("json.a.y.1.k", ""),
                ("json.z", "x' or 1=1"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    /// Numbers read as serde_json prints them; escapes decoded; an empty container no leaf.
    #[test]
    fn numbers_strings_and_empty_containers() {
        assert_eq!(
            leaves(r#"[-7, 18446744073709551615, 1.50, 1e3, "a\"b\u00e9", [], {}]"#),
            [
                ("json.0", "-7"),
                ("json.1", "18446744073709551615"),
                ("json.2", "1.5"),
                ("json.3", "1000.0"),
                ("json.4", "a\"bé"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(leaves(r#""top""#), [("json".to_owned(), "top".to_owned())]);
    }

    /// The cap stops collecting, not parsing: a syntax error after it still fails the body.
    #[test]
    fn cap_collects_fewer_but_parses_everything() {
        let got = flatten(b"[1,2,3,4]", 2).expect("valid JSON");
        assert_eq!(got.len(), 2);
        assert!(flatten(b"[1,2,3,4,]", 2).is_err());
        assert!(flatten(b"{\"a\":1} trailing", 10).is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(flatten(deep.as_bytes(), 10).is_err(), "depth is bounded");
    }
}
