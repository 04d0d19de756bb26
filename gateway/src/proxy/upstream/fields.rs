//! An HTTP/1.1 upstream's response header fields, kept in the bytes they arrived in.
//!
//! The gateway's own HTTP/1.1 encoder writes them from those bytes; a header map is built only
//! for a response something reads by name (a route with CORS, a response filter or stage
//! headers) or that leaves through hyper (HTTP/2 clients). Per proxied request that is the
//! `HeaderName` lookups, value copies into `Bytes` handles, the hashed map inserts and its drop
//! saved (22.7k -> 21.5k user-space instructions, callgrind, `cargo xtask bench l7`'s backend).
//! httparse has checked the names (tokens) and the values (no control bytes) against the same
//! rules `http`'s types apply, so a field written here is one the map would have held.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

// Hop-by-hop fields never cross the gateway, nor do the fields `Connection` names.
use crate::proxy::headers::HOP_BY_HOP_NAMES as HOP_BY_HOP;

/// One field: offsets of its name and value in the head.
#[derive(Clone, Copy, Debug)]
pub(super) struct Field {
    name: (u32, u32),
    value: (u32, u32),
    fate: Fate,
}

/// What becomes of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Forwarded,
    /// Kept for the framing decision and for [`ResponseFields::append_all_to`], never forwarded.
    HopByHop,
    /// Removed (a policy's, or a `Content-Length` a `Transfer-Encoding` overrides).
    Removed,
}

/// The response's header fields in arrival order, sharing the head's bytes.
#[derive(Clone, Debug, Default)]
pub struct ResponseFields {
    /// Boxed: the value is moved along with each request's futures and answer (callgrind: an
    /// inline 56 bytes cost more in copies than the allocation).
    inner: Box<Inner>,
}

#[derive(Clone, Debug, Default)]
struct Inner {
    head: Bytes,
    fields: Vec<Field>,
}

impl Field {
    /// A field whose name and value are these byte ranges of the head.
    pub(super) fn new(name: (u32, u32), value: (u32, u32)) -> Self {
        Self {
            name,
            value,
            fate: Fate::Forwarded,
        }
    }
}

impl ResponseFields {
    /// From a parsed head: `fields` are byte ranges in `head`, checked by httparse. Hop-by-hop
    /// fields and those `Connection` names are marked as not forwarded.
    pub(super) fn new(head: Bytes, fields: Vec<Field>) -> Self {
        let mut this = Self {
            inner: Box::new(Inner { head, fields }),
        };
        let mut named_by_connection = false;
        for i in 0..this.inner.fields.len() {
            let name = this.name(&this.inner.fields[i]);
            if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                named_by_connection |= name.eq_ignore_ascii_case(b"connection");
                this.inner.fields[i].fate = Fate::HopByHop;
            }
        }
        if named_by_connection {
            let named: Vec<&[u8]> = this
                .values(b"connection")
                .flat_map(|v| v.split(|b| *b == b','))
                .map(<[u8]>::trim_ascii)
                .filter(|n| !n.is_empty())
                .collect();
            let drop: Vec<bool> = this
                .inner
                .fields
                .iter()
                .map(|f| {
                    let name = &this.inner.head[f.name.0 as usize..f.name.1 as usize];
                    named.iter().any(|n| n.eq_ignore_ascii_case(name))
                })
                .collect();
            for (f, drop) in this.inner.fields.iter_mut().zip(drop) {
                if drop {
                    f.fate = Fate::HopByHop;
                }
            }
        }
        this
    }

    fn name(&self, f: &Field) -> &[u8] {
        &self.inner.head[f.name.0 as usize..f.name.1 as usize]
    }

    fn value(&self, f: &Field) -> &[u8] {
        &self.inner.head[f.value.0 as usize..f.value.1 as usize]
    }

    /// Every value of fields named `name` (ASCII case-insensitive) not removed, in order.
    pub(super) fn values<'a>(
        &'a self,
        name: &'a [u8],
    ) -> impl DoubleEndedIterator<Item = &'a [u8]> + 'a {
        self.inner
            .fields
            .iter()
            .filter(move |f| f.fate != Fate::Removed && self.name(f).eq_ignore_ascii_case(name))
            .map(|f| self.value(f))
    }

    /// The fields that go to the client, as (name, value), in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.inner
            .fields
            .iter()
            .filter(|f| f.fate == Fate::Forwarded)
            .map(|f| (self.name(f), self.value(f)))
    }

    /// Stops forwarding the fields whose (lowercase) name `drop` picks.
    pub fn remove_if(&mut self, mut drop: impl FnMut(&[u8]) -> bool) {
        for i in 0..self.inner.fields.len() {
            let f = self.inner.fields[i];
            if f.fate == Fate::Forwarded {
                let name = &self.inner.head[f.name.0 as usize..f.name.1 as usize];
                // Names here are short tokens: a stack copy lowercased beats an allocation.
                let mut lower = [0u8; 64];
                let dropped = if name.len() <= lower.len() {
                    let lower = &mut lower[..name.len()];
                    lower.copy_from_slice(name);
                    lower.make_ascii_lowercase();
                    drop(lower)
                } else {
                    drop(&name.to_ascii_lowercase())
                };
                if dropped {
                    self.inner.fields[i].fate = Fate::Removed;
                }
            }
        }
    }

    /// The first forwarded `Content-Length` value.
    pub fn content_length(&self) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
            .map(|(_, v)| v)
    }

    /// Writes the forwarded fields as HTTP/1 field lines, `Content-Length` only when
    /// `with_length`; returns whether a `Date` was among them.
    pub fn write_to(&self, out: &mut Vec<u8>, with_length: bool) -> bool {
        let mut date = false;
        for (name, value) in self.iter() {
            if !with_length && name.eq_ignore_ascii_case(b"content-length") {
                continue;
            }
            date |= name.eq_ignore_ascii_case(b"date");
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        date
    }

    /// Appends the forwarded fields to `map` (names lowercased, values sharing the head).
    pub fn append_to(&self, map: &mut HeaderMap) {
        self.append(map, false);
    }

    /// Appends the fields not removed to `map`, hop-by-hop ones included: the response as the
    /// upstream sent it, for a caller other than the proxy.
    pub fn append_all_to(&self, map: &mut HeaderMap) {
        self.append(map, true);
    }

    fn append(&self, map: &mut HeaderMap, hop_by_hop: bool) {
        map.reserve(self.inner.fields.len());
        let wanted =
            |f: &&Field| f.fate == Fate::Forwarded || (hop_by_hop && f.fate == Fate::HopByHop);
        for f in self.inner.fields.iter().filter(wanted) {
            // httparse checked both against the rules these constructors apply.
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(self.name(f)),
                HeaderValue::from_maybe_shared(
                    self.inner
                        .head
                        .slice(f.value.0 as usize..f.value.1 as usize),
                ),
            ) else {
                continue;
            };
            map.append(name, value);
        }
    }

    /// Removes every `Content-Length` (a `Transfer-Encoding` overrides it).
    pub(super) fn drop_content_length(&mut self) {
        for f in &mut self.inner.fields {
            if self.inner.head[f.name.0 as usize..f.name.1 as usize]
                .eq_ignore_ascii_case(b"content-length")
            {
                f.fate = Fate::Removed;
            }
        }
    }

    /// Fields as an upstream would send these (name, value) pairs (tests elsewhere).
    #[cfg(test)]
    pub(crate) fn from_pairs(lines: &[(&str, &str)]) -> Self {
        let mut head = Vec::new();
        let mut fields = Vec::new();
        for (n, v) in lines {
            let n0 = head.len() as u32;
            head.extend_from_slice(n.as_bytes());
            let n1 = head.len() as u32;
            head.extend_from_slice(b": ");
            let v0 = head.len() as u32;
            head.extend_from_slice(v.as_bytes());
            let v1 = head.len() as u32;
            head.extend_from_slice(b"\r\n");
            fields.push(Field::new((n0, n1), (v0, v1)));
        }
        Self::new(Bytes::from(head), fields)
    }

    /// Every field not removed, hop-by-hop ones included, names lowercased (the response
    /// differential compares what was read, not what is forwarded).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn all(&self) -> impl Iterator<Item = (String, &[u8])> {
        self.inner
            .fields
            .iter()
            .filter(|f| f.fate != Fate::Removed)
            .map(|f| {
                (
                    String::from_utf8_lossy(self.name(f)).to_ascii_lowercase(),
                    self.value(f),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(lines: &[(&str, &str)]) -> ResponseFields {
        ResponseFields::from_pairs(lines)
    }

    fn names(f: &ResponseFields) -> Vec<String> {
        f.iter()
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_not_forwarded() {
        let f = fields(&[
            ("Content-Type", "text/plain"),
            ("Connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("X-Other", "2"),
        ]);
        assert_eq!(names(&f), ["Content-Type", "X-Other"]);
        // Still there for the framing decision.
        assert_eq!(
            f.values(b"transfer-encoding").collect::<Vec<_>>(),
            [b"chunked"]
        );
    }

    #[test]
    fn written_as_field_lines_in_order_with_or_without_length() {
        let f = fields(&[
            ("Content-Length", "5"),
            ("Set-Cookie", "a=1"),
            ("Date", "Wed, 25 Nov 2026 12:00:00 GMT"),
            ("set-cookie", "b=2"),
        ]);
        let mut out = Vec::new();
        assert!(f.write_to(&mut out, false));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Set-Cookie: a=1\r\nDate: Wed, 25 Nov 2026 12:00:00 GMT\r\nset-cookie: b=2\r\n"
        );
        out.clear();
        f.write_to(&mut out, true);
        assert!(out.starts_with(b"Content-Length: 5\r\n"));
        assert_eq!(f.content_length(), Some(&b"5"[..]));
    }

    #[test]
    fn removal_sees_lowercase_names_and_the_map_gets_what_is_forwarded() {
        let mut f = fields(&[
            ("Server", "nginx"),
            ("X-Powered-By", "PHP"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Connection", "close"),
        ]);
        f.remove_if(|n| n == b"server" || n == b"x-powered-by");
        let mut map = HeaderMap::new();
        f.append_to(&mut map);
        assert_eq!(map.len(), 2);
        let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        let mut all = HeaderMap::new();
        f.append_all_to(&mut all);
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all["connection"], "close");
        f.drop_content_length();
        assert_eq!(f.content_length(), None);
    }
}
