//! TX, the transaction collection, as one request holds it.
//!
//! Every request starts from the same TX (the configuration's setup and, with CRS, the
//! initialisation that [`super::fold`] decided at load: ~100 variables at PL1). Copying it per
//! request cost ~2 % of a 100 B inspection and freeing the copy as much again (callgrind), so
//! a request shares the start and keeps only what it sets or deletes, in an array by the
//! start's slots (one lookup by name, as before; no key allocated for a variable the start
//! has). The captures TX.0-TX.9, rewritten by every `capture` match (CRS 920450 once per
//! header), are slots 0-9, found without hashing.

use std::{collections::HashMap, sync::Arc};

/// TX by lowercase name, as loading builds it.
pub(super) type TxMap = HashMap<String, Vec<u8>, foldhash::fast::RandomState>;

/// The names of the capture slots, TX.0 to TX.9 (ModSecurity keeps ten).
pub(super) const CAPTURE_NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The TX every request starts with, shared by the requests: each variable it has (and each
/// capture slot) is numbered, so that a request's own values are an array beside it.
#[derive(Debug)]
pub(super) struct TxStart {
    /// Slot by name; slots 0-9 are the captures, found from the name without hashing.
    index: HashMap<String, u32, foldhash::fast::RandomState>,
    names: Vec<String>,
    values: Vec<Option<Vec<u8>>>,
}

impl Default for TxStart {
    fn default() -> Self {
        Self::from(TxMap::default())
    }
}

impl From<TxMap> for TxStart {
    fn from(mut vars: TxMap) -> Self {
        let mut names: Vec<String> = CAPTURE_NAMES.iter().map(|n| (*n).to_owned()).collect();
        let mut values: Vec<Option<Vec<u8>>> =
            CAPTURE_NAMES.iter().map(|n| vars.remove(*n)).collect();
        for (k, v) in vars {
            names.push(k);
            values.push(Some(v));
        }
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Self {
            index,
            names,
            values,
        }
    }
}

impl TxStart {
    fn slot(&self, k: &str) -> Option<usize> {
        match k.as_bytes() {
            [d @ b'0'..=b'9'] => Some(usize::from(d - b'0')),
            _ => self.index.get(k).map(|&i| i as usize),
        }
    }
}

/// One request's TX: the shared start, overlaid with what the request changed.
pub(super) struct Tx {
    start: Arc<TxStart>,
    /// By the start's slots: `None` while the request has not touched the variable, then its
    /// value (`Some(None)`: deleted).
    own: Vec<Option<Option<Vec<u8>>>>,
    /// Variables the start does not have.
    added: HashMap<String, Vec<u8>, foldhash::fast::RandomState>,
}

impl Tx {
    pub(super) fn new(start: Arc<TxStart>) -> Self {
        Self {
            own: vec![None; start.names.len()],
            added: HashMap::default(),
            start,
        }
    }

    pub(super) fn get(&self, k: &str) -> Option<&[u8]> {
        match self.start.slot(k) {
            Some(i) => match &self.own[i] {
                Some(v) => v.as_deref(),
                None => self.start.values[i].as_deref(),
            },
            None => self.added.get(k).map(Vec::as_slice),
        }
    }

    pub(super) fn set(&mut self, k: &str, v: Vec<u8>) {
        match self.start.slot(k) {
            Some(i) => self.own[i] = Some(Some(v)),
            None => match self.added.get_mut(k) {
                Some(slot) => *slot = v,
                None => {
                    self.added.insert(k.to_owned(), v);
                }
            },
        }
    }

    /// As [`Tx::set`] with a copy of `v`, into the buffer the variable already has if any.
    pub(super) fn set_from(&mut self, k: &str, v: &[u8]) {
        let buf = match self.start.slot(k) {
            Some(i) => match &mut self.own[i] {
                Some(Some(buf)) => buf,
                slot => {
                    *slot = Some(Some(v.to_vec()));
                    return;
                }
            },
            None => match self.added.get_mut(k) {
                Some(buf) => buf,
                None => {
                    self.added.insert(k.to_owned(), v.to_vec());
                    return;
                }
            },
        };
        buf.clear();
        buf.extend_from_slice(v);
    }

    pub(super) fn remove(&mut self, k: &str) {
        match self.start.slot(k) {
            Some(i) => self.own[i] = Some(None),
            None => {
                self.added.remove(k);
            }
        }
    }

    /// A match's captures become TX.0 onwards; the slots it has no group for are emptied.
    pub(super) fn set_captures(&mut self, groups: &[Vec<u8>]) {
        for (i, slot) in self.own[..CAPTURE_NAMES.len()].iter_mut().enumerate() {
            match (groups.get(i), slot) {
                (Some(g), Some(Some(s))) => {
                    s.clear();
                    s.extend_from_slice(g);
                }
                (Some(g), slot) => *slot = Some(Some(g.clone())),
                (None, slot) => *slot = Some(None),
            }
        }
    }

    /// Every variable with its value (in no particular order, as a hash map's).
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let start = self.start.names.iter().enumerate().filter_map(|(i, k)| {
            let v = match &self.own[i] {
                Some(v) => v.as_deref(),
                None => self.start.values[i].as_deref(),
            };
            Some((k.as_str(), v?))
        });
        let added = self.added.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        start.chain(added)
    }

    /// The whole TX as one map (for loading's analysis, not per request).
    pub(super) fn into_map(self) -> TxMap {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(pairs: &[(&str, &str)]) -> Arc<TxStart> {
        let map: TxMap = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect();
        Arc::new(TxStart::from(map))
    }

    fn sorted(tx: &Tx) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = tx
            .iter()
            .map(|(k, v)| (k.to_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_request_sees_the_start_with_its_own_changes_over_it() {
        let s = start(&[("score", "0"), ("level", "1"), ("gone", "x"), ("0", "c")]);
        let mut a = Tx::new(Arc::clone(&s));
        a.set("score", b"5".to_vec());
        a.set_from("score", b"7");
        a.remove("gone");
        a.set("new", b"n".to_vec());
        a.remove("never_set");
        assert_eq!(a.get("score"), Some(&b"7"[..]));
        assert_eq!(a.get("level"), Some(&b"1"[..]));
        assert_eq!(a.get("gone"), None);
        assert_eq!(a.get("0"), Some(&b"c"[..]));
        assert_eq!(
            sorted(&a),
            [("0", "c"), ("level", "1"), ("new", "n"), ("score", "7")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // Another request from the same start sees none of it.
        let b = Tx::new(Arc::clone(&s));
        assert_eq!(b.get("score"), Some(&b"0"[..]));
        assert_eq!(b.get("gone"), Some(&b"x"[..]));
        assert_eq!(b.get("new"), None);
        let mut flat: Vec<_> = a.into_map().into_iter().collect();
        flat.sort();
        assert_eq!(
            flat,
            [("0", "c"), ("level", "1"), ("new", "n"), ("score", "7")]
                .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
        );
    }

    #[test]
    fn captures_replace_every_slot() {
        let mut tx = Tx::new(start(&[]));
        tx.set_captures(&[b"whole".to_vec(), b"g1".to_vec(), b"g2".to_vec()]);
        tx.set_captures(&[b"again".to_vec()]);
        assert_eq!(tx.get("0"), Some(&b"again"[..]));
        assert_eq!(tx.get("1"), None);
        assert_eq!(tx.get("2"), None);
        tx.set("1", b"by setvar".to_vec());
        assert_eq!(sorted(&tx).len(), 2);
        tx.remove("0");
        assert_eq!(tx.get("0"), None);
        // Names that only start with a digit are ordinary variables.
        tx.set("10", b"ten".to_vec());
        assert_eq!(tx.get("10"), Some(&b"ten"[..]));
        assert_eq!(tx.get("1"), Some(&b"by setvar"[..]));
    }
}
