//! Every transformation, alone and in the chains CRS uses, on arbitrary bytes: no panic, and the
//! properties callers rely on (borrowed means unchanged; lowercase leaves no upper case; ...).
#![no_main]

use std::borrow::Cow;

use gateway::waf::transform::Transform;
use libfuzzer_sys::fuzz_target;

const ALL: &[&str] = &[
    "none", "lowercase", "uppercase", "urlDecode", "urlDecodeUni", "urlEncode", "htmlEntityDecode",
    "jsDecode", "cssDecode", "escapeSeqDecode", "cmdLine", "compressWhitespace", "removeWhitespace",
    "removeNulls", "replaceNulls", "removeComments", "replaceComments", "removeCommentsChar",
    "normalisePath", "normalisePathWin", "base64Decode", "base64DecodeExt", "base64Encode",
    "hexDecode", "hexEncode", "sqlHexDecode", "utf8toUnicode", "length", "trim", "trimLeft",
    "trimRight", "sha1", "md5",
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chain of up to three transformations; the rest is the value.
    let Some((&pick, value)) = data.split_first() else { return };
    let ts: Vec<Transform> = ALL.iter().filter_map(|n| Transform::from_name(n)).collect();
    for t in &ts {
        let out = t.apply(value);
        if let Cow::Borrowed(b) = &out {
            // Borrowed output is the input or (trim) a sub-slice of it.
            assert!(value.windows(b.len().max(1)).any(|w| w == *b) || b.is_empty());
        }
        match t {
            Transform::Lowercase => assert!(!out.iter().any(u8::is_ascii_uppercase)),
            Transform::RemoveNulls => assert!(!out.contains(&0)),
            Transform::Length => assert_eq!(out.as_ref(), value.len().to_string().as_bytes()),
            Transform::None => assert_eq!(out.as_ref(), value),
            _ => {}
        }
    }
    let chain = [
        ts[usize::from(pick) % ts.len()],
        ts[usize::from(pick / 7) % ts.len()],
        ts[usize::from(pick / 49) % ts.len()],
    ];
    let mut v: Cow<[u8]> = Cow::Borrowed(value);
    for t in chain {
        v = Cow::Owned(t.apply(&v).into_owned());
    }
});
