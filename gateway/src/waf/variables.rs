//! The variables request rules read (phases 1 and 2), how a rule names them (selectors, regex
//! selectors, exclusions, counting), and the per-request data they are read from.

use regex::bytes::Regex;

use super::seclang::{RawSelector, RawTarget};

/// A variable or collection. Response-side variables parse (so stock files load) and are empty:
/// the gateway does not run response phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Var {
    Args,
    ArgsGet,
    ArgsPost,
    ArgsNames,
    ArgsGetNames,
    ArgsPostNames,
    ArgsCombinedSize,
    RequestHeaders,
    RequestHeadersNames,
    RequestCookies,
    RequestCookiesNames,
    RequestUri,
    RequestUriRaw,
    RequestFilename,
    RequestBasename,
    RequestLine,
    RequestMethod,
    RequestProtocol,
    QueryString,
    RequestBody,
    RequestBodyLength,
    ReqbodyError,
    ReqbodyErrorMsg,
    ReqbodyProcessor,
    Files,
    FilesNames,
    FilesSizes,
    FilesCombinedSize,
    MultipartPartHeaders,
    MultipartStrictError,
    MultipartUnmatchedBoundary,
    MultipartBoundaryQuoted,
    MultipartBoundaryWhitespace,
    MultipartDataBefore,
    MultipartDataAfter,
    MultipartHeaderFolding,
    MultipartLfLine,
    MultipartMissingSemicolon,
    MultipartInvalidQuoting,
    MultipartInvalidPart,
    MultipartInvalidHeaderFolding,
    MultipartFileLimitExceeded,
    MultipartCrlfLfLines,
    MultipartFilename,
    MultipartName,
    UrlencodedError,
    InboundDataError,
    Xml,
    Tx,
    Ip,
    Session,
    Global,
    Env,
    UniqueId,
    RemoteAddr,
    RemotePort,
    ServerAddr,
    ServerName,
    ServerPort,
    AuthType,
    Duration,
    MatchedVar,
    MatchedVarName,
    MatchedVars,
    MatchedVarsNames,
    FullRequest,
    FullRequestLength,
    HighestSeverity,
    Time,
    TimeEpoch,
    Geo,
    /// Any response variable: always empty here.
    Response,
}

const NAMES: &[(&str, Var)] = &[
    ("ARGS", Var::Args),
    ("ARGS_GET", Var::ArgsGet),
    ("ARGS_POST", Var::ArgsPost),
    ("ARGS_NAMES", Var::ArgsNames),
    ("ARGS_GET_NAMES", Var::ArgsGetNames),
    ("ARGS_POST_NAMES", Var::ArgsPostNames),
    ("ARGS_COMBINED_SIZE", Var::ArgsCombinedSize),
    ("REQUEST_HEADERS", Var::RequestHeaders),
    ("REQUEST_HEADERS_NAMES", Var::RequestHeadersNames),
    ("REQUEST_COOKIES", Var::RequestCookies),
    ("REQUEST_COOKIES_NAMES", Var::RequestCookiesNames),
    ("REQUEST_URI", Var::RequestUri),
    ("REQUEST_URI_RAW", Var::RequestUriRaw),
    ("REQUEST_FILENAME", Var::RequestFilename),
    ("REQUEST_BASENAME", Var::RequestBasename),
    ("REQUEST_LINE", Var::RequestLine),
    ("REQUEST_METHOD", Var::RequestMethod),
    ("REQUEST_PROTOCOL", Var::RequestProtocol),
    ("QUERY_STRING", Var::QueryString),
    ("REQUEST_BODY", Var::RequestBody),
    ("REQUEST_BODY_LENGTH", Var::RequestBodyLength),
    ("REQBODY_ERROR", Var::ReqbodyError),
    ("REQBODY_PROCESSOR_ERROR", Var::ReqbodyError),
    ("REQBODY_ERROR_MSG", Var::ReqbodyErrorMsg),
    ("REQBODY_PROCESSOR_ERROR_MSG", Var::ReqbodyErrorMsg),
    ("REQBODY_PROCESSOR", Var::ReqbodyProcessor),
    ("FILES", Var::Files),
    ("FILES_NAMES", Var::FilesNames),
    ("FILES_SIZES", Var::FilesSizes),
    ("FILES_COMBINED_SIZE", Var::FilesCombinedSize),
    ("MULTIPART_PART_HEADERS", Var::MultipartPartHeaders),
    ("MULTIPART_STRICT_ERROR", Var::MultipartStrictError),
    (
        "MULTIPART_UNMATCHED_BOUNDARY",
        Var::MultipartUnmatchedBoundary,
    ),
    ("MULTIPART_BOUNDARY_QUOTED", Var::MultipartBoundaryQuoted),
    (
        "MULTIPART_BOUNDARY_WHITESPACE",
        Var::MultipartBoundaryWhitespace,
    ),
    ("MULTIPART_DATA_BEFORE", Var::MultipartDataBefore),
    ("MULTIPART_DATA_AFTER", Var::MultipartDataAfter),
    ("MULTIPART_HEADER_FOLDING", Var::MultipartHeaderFolding),
    ("MULTIPART_LF_LINE", Var::MultipartLfLine),
    (
        "MULTIPART_MISSING_SEMICOLON",
        Var::MultipartMissingSemicolon,
    ),
    ("MULTIPART_INVALID_QUOTING", Var::MultipartInvalidQuoting),
    ("MULTIPART_INVALID_PART", Var::MultipartInvalidPart),
    (
        "MULTIPART_INVALID_HEADER_FOLDING",
        Var::MultipartInvalidHeaderFolding,
    ),
    (
        "MULTIPART_FILE_LIMIT_EXCEEDED",
        Var::MultipartFileLimitExceeded,
    ),
    ("MULTIPART_CRLF_LF_LINES", Var::MultipartCrlfLfLines),
    ("MULTIPART_FILENAME", Var::MultipartFilename),
    ("MULTIPART_NAME", Var::MultipartName),
    ("URLENCODED_ERROR", Var::UrlencodedError),
    ("INBOUND_DATA_ERROR", Var::InboundDataError),
    ("XML", Var::Xml),
    ("TX", Var::Tx),
    ("IP", Var::Ip),
    ("SESSION", Var::Session),
    ("GLOBAL", Var::Global),
    ("ENV", Var::Env),
    ("UNIQUE_ID", Var::UniqueId),
    ("REMOTE_ADDR", Var::RemoteAddr),
    ("REMOTE_PORT", Var::RemotePort),
    ("SERVER_ADDR", Var::ServerAddr),
    ("SERVER_NAME", Var::ServerName),
    ("SERVER_PORT", Var::ServerPort),
    ("AUTH_TYPE", Var::AuthType),
    ("DURATION", Var::Duration),
    ("MATCHED_VAR", Var::MatchedVar),
    ("MATCHED_VAR_NAME", Var::MatchedVarName),
    ("MATCHED_VARS", Var::MatchedVars),
    ("MATCHED_VARS_NAMES", Var::MatchedVarsNames),
    ("FULL_REQUEST", Var::FullRequest),
    ("FULL_REQUEST_LENGTH", Var::FullRequestLength),
    ("HIGHEST_SEVERITY", Var::HighestSeverity),
    ("TIME", Var::Time),
    ("TIME_EPOCH", Var::TimeEpoch),
    ("GEO", Var::Geo),
];

impl Var {
    pub fn from_name(name: &str) -> Option<Self> {
        let upper = name.to_ascii_uppercase();
        if let Some((_, v)) = NAMES.iter().find(|(n, _)| *n == upper) {
            return Some(*v);
        }
        if upper.starts_with("RESPONSE_")
            || upper == "STATUS_LINE"
            || upper == "WEBSERVER_ERROR_LOG"
        {
            return Some(Var::Response);
        }
        None
    }

    /// The name as ModSecurity prints it (`MATCHED_VAR_NAME`, logs).
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("RESPONSE", |(n, _)| n)
    }

    /// Persistent-in-ModSecurity collections kept per request here (`setvar:ip.x`).
    pub fn collection_prefix(self) -> Option<&'static str> {
        match self {
            Var::Tx => Some("tx"),
            Var::Ip => Some("ip"),
            Var::Session => Some("session"),
            Var::Global => Some("global"),
            _ => None,
        }
    }
}

/// Which members of a collection a target reads.
#[derive(Clone, Debug)]
pub enum Selector {
    All,
    /// Case-insensitive key, stored lowercase.
    Key(String),
    /// A regex selector that is only an anchored literal (`TX:/^header_name_920450_/`): the
    /// case-insensitive prefix, stored lowercase, checked without a regex engine (CRS runs such
    /// selectors over every TX variable, a hundred or more per request).
    Prefix(String),
    /// A regex selector that is only an unanchored literal, maybe followed by a starred
    /// character (`TX:/MULTIPART_HEADERS_CONTENT_TYPES_*/`, `TX:/paramcounter_.*/`): the
    /// case-insensitive literal, stored lowercase, looked for without a regex engine (CRS 922110
    /// runs it over every TX variable of every request).
    Contains(String),
    Regex(Regex),
}

impl Selector {
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Selector::All => true,
            Selector::Key(k) => key.eq_ignore_ascii_case(k.as_bytes()),
            Selector::Prefix(p) => key
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            Selector::Contains(c) => key
                .windows(c.len())
                .any(|w| w.eq_ignore_ascii_case(c.as_bytes())),
            Selector::Regex(r) => r.is_match(key),
        }
    }
}

/// The literal an unanchored regex selector looks for, when it is nothing else: plain name
/// characters, then at most one starred character or `.*` (which matches the empty string, so
/// the regex matches exactly where the literal occurs).
fn contained_literal(r: &str) -> Option<&str> {
    let name = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let lit = match r.strip_suffix('*') {
        Some(head) => {
            let last = head.chars().last()?;
            (last == '.' || name(&last.to_string())).then(|| &head[..head.len() - 1])?
        }
        None => r,
    };
    name(lit).then_some(lit)
}

/// One element of a rule's variable list.
#[derive(Clone, Debug)]
pub struct Target {
    pub var: Var,
    pub selector: Selector,
    /// `&VAR`: the number of members, not their values.
    pub count: bool,
}

impl Target {
    /// Whether the values come straight from the parsed request (borrowed, the same for the
    /// whole phase), not from TX, other collections, `ctl` state or counts.
    pub fn is_request_data(&self) -> bool {
        !self.count
            && matches!(
                self.var,
                Var::Args
                    | Var::ArgsGet
                    | Var::ArgsPost
                    | Var::ArgsNames
                    | Var::ArgsGetNames
                    | Var::ArgsPostNames
                    | Var::RequestHeaders
                    | Var::RequestHeadersNames
                    | Var::RequestCookies
                    | Var::RequestCookiesNames
                    | Var::Files
                    | Var::FilesNames
                    | Var::FilesSizes
                    | Var::MultipartPartHeaders
                    | Var::Xml
                    | Var::RequestUri
                    | Var::RequestUriRaw
                    | Var::RequestFilename
                    | Var::RequestBasename
                    | Var::RequestLine
                    | Var::RequestMethod
                    | Var::RequestProtocol
                    | Var::QueryString
                    | Var::RemoteAddr
                    | Var::RequestBody
            )
    }
}

/// `!VAR:key` in a rule's variable list (or added by an exclusion): members never inspected.
#[derive(Clone, Debug)]
pub struct Exclusion {
    pub var: Var,
    pub selector: Selector,
}

impl Exclusion {
    /// Whether a value of `var` under `key` is excluded; `!ARGS:x` also covers `ARGS_GET:x`
    /// and `ARGS_POST:x`, as in ModSecurity.
    pub fn covers(&self, var: Var, key: &[u8]) -> bool {
        self.can_cover(var) && self.selector.matches(key)
    }

    /// Whether some value of `var` could be excluded by this.
    pub fn can_cover(&self, var: Var) -> bool {
        self.var == var
            || (self.var == Var::Args && matches!(var, Var::ArgsGet | Var::ArgsPost))
            || (self.var == Var::ArgsNames && matches!(var, Var::ArgsGetNames | Var::ArgsPostNames))
    }
}

/// Either a target or an exclusion, parsed from one list element.
pub enum Parsed {
    Target(Target),
    Exclusion(Exclusion),
}

pub fn parse_target(raw: &RawTarget) -> Result<Parsed, String> {
    let var =
        Var::from_name(&raw.name).ok_or_else(|| format!("unsupported variable `{}`", raw.name))?;
    let selector = match &raw.selector {
        None => Selector::All,
        Some(RawSelector::Key(k)) if var == Var::Xml => Selector::Key(k.clone()),
        Some(RawSelector::Key(k)) => Selector::Key(k.to_ascii_lowercase()),
        Some(RawSelector::Regex(r))
            if r.len() > 1
                && r.starts_with('^')
                && r[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Selector::Prefix(r[1..].to_ascii_lowercase())
        }
        Some(RawSelector::Regex(r)) if let Some(lit) = contained_literal(r) => {
            Selector::Contains(lit.to_ascii_lowercase())
        }
        Some(RawSelector::Regex(r)) => Selector::Regex(
            regex::bytes::RegexBuilder::new(r)
                .case_insensitive(true)
                .build()
                .map_err(|e| format!("regex selector of `{}`: {e}", raw.name))?,
        ),
    };
    Ok(if raw.negated {
        Parsed::Exclusion(Exclusion { var, selector })
    } else {
        Parsed::Target(Target {
            var,
            selector,
            count: raw.count,
        })
    })
}

/// A named value with the transformation cache keys of its value and of its name.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The value's cache slot; 0: not cached.
    pub slot: u32,
    /// The name's cache slot (`ARGS_NAMES` and the like).
    pub key_slot: u32,
}

/// Multipart parsing outcome flags, as ModSecurity names them.
#[derive(Clone, Debug, Default)]
pub struct MultipartFlags {
    pub strict_error: bool,
    pub unmatched_boundary: bool,
    pub boundary_quoted: bool,
    pub boundary_whitespace: bool,
    pub data_before: bool,
    pub data_after: bool,
    pub header_folding: bool,
    pub lf_line: bool,
    pub crlf_lf_lines: bool,
    pub missing_semicolon: bool,
    pub invalid_quoting: bool,
    pub invalid_part: bool,
    pub invalid_header_folding: bool,
    pub file_limit_exceeded: bool,
}

/// What the rules read about one request; filled before phase 1 (line, headers, query) and
/// after it (body).
#[derive(Debug, Default)]
pub struct RequestData {
    pub args_get: Vec<Entry>,
    pub args_post: Vec<Entry>,
    pub headers: Vec<Entry>,
    pub cookies: Vec<Entry>,
    /// FILES: field name -> file name.
    pub files: Vec<Entry>,
    pub files_sizes: Vec<Entry>,
    pub multipart_part_headers: Vec<Entry>,
    pub xml_text: Option<Entry>,
    pub xml_attrs: Vec<Entry>,
    pub uri: Entry,
    pub uri_raw: Entry,
    pub filename: Entry,
    pub basename: Entry,
    pub line: Entry,
    pub method: Entry,
    pub protocol: Entry,
    pub query: Entry,
    pub body: Option<Entry>,
    pub remote_addr: Entry,
    pub unique_id: Entry,
    pub reqbody_error: bool,
    pub reqbody_error_msg: String,
    /// The body had more arguments than the engine's limit; only the first were kept.
    pub args_truncated: bool,
    pub urlencoded_error: bool,
    pub processor: Option<&'static str>,
    pub multipart: MultipartFlags,
    pub files_combined_size: u64,
    pub body_length: usize,
    next_slot: u32,
    /// Slots of the short argument values seen so far in this request.
    slots: std::collections::HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>,
}

/// Contents up to this long share a slot with their equals; longer ones (a whole body) get
/// one of their own, not hashed and copied for a twin they almost never have.
const SHARED_SLOT_MAX: usize = 256;

impl RequestData {
    /// An entry with fresh slots.
    pub fn entry(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Entry {
        self.next_slot += 2;
        Entry {
            key: key.into(),
            value: value.into(),
            slot: self.next_slot - 1,
            key_slot: self.next_slot,
        }
    }

    /// An argument (query or body): its value shares a slot with equal values, so one
    /// repeated across a request (the `"status":"active"` of every item in a JSON array) is
    /// transformed, scanned and matched once per rule rather than once per occurrence. Names
    /// (JSON paths, mostly unique) and other entries are not looked up: the hashing would
    /// cost more than the repeats save.
    pub fn arg_entry(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Entry {
        let value = value.into();
        let slot = self.slot_of(&value);
        self.next_slot += 1;
        Entry {
            key: key.into(),
            value,
            slot,
            key_slot: self.next_slot,
        }
    }

    fn slot_of(&mut self, content: &[u8]) -> u32 {
        if content.len() <= SHARED_SLOT_MAX {
            if let Some(&slot) = self.slots.get(content) {
                return slot;
            }
            self.next_slot += 1;
            self.slots.insert(content.into(), self.next_slot);
        } else {
            self.next_slot += 1;
        }
        self.next_slot
    }

    pub fn args_combined_size(&self) -> usize {
        self.args_get
            .iter()
            .chain(&self.args_post)
            .map(|e| e.key.len() + e.value.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(raw: &str) -> Selector {
        let target = RawTarget {
            name: "TX".into(),
            selector: Some(RawSelector::Regex(raw.into())),
            negated: false,
            count: false,
        };
        match parse_target(&target) {
            Ok(Parsed::Target(t)) => t.selector,
            _ => panic!("{raw}: not parsed as a target"),
        }
    }

    #[test]
    fn anchored_literal_selectors_match_as_their_regex() {
        let prefix = selector("^header_name_920450_");
        assert!(matches!(prefix, Selector::Prefix(_)), "{prefix:?}");
        let regex = regex::bytes::RegexBuilder::new("^header_name_920450_")
            .case_insensitive(true)
            .build()
            .expect("compiles");
        for key in [
            &b"header_name_920450_x-api-key"[..],
            b"HEADER_NAME_920450_host",
            b"header_name_920450_",
            b"header_name_920450",
            b"x_header_name_920450_a",
            b"",
            b"header_name_920451_a",
        ] {
            assert_eq!(prefix.matches(key), regex.is_match(key), "{key:?}");
        }
        // Anything beyond an anchored literal stays a regex.
        for raw in ["^a.b", "^(?:a|b)$", "^a$", "^"] {
            assert!(matches!(selector(raw), Selector::Regex(_)), "{raw}");
        }
    }

    #[test]
    fn unanchored_literal_selectors_match_as_their_regex() {
        let keys = [
            &b"multipart_headers_content_types_1"[..],
            b"MULTIPART_HEADERS_CONTENT_TYPES",
            b"x_multipart_headers_content_types__",
            b"multipart_headers_content_type",
            b"paramcounter_",
            b"a_paramcounter_b",
            b"paramcounter",
            b"ParamCounter_x",
            b"",
        ];
        for raw in [
            "MULTIPART_HEADERS_CONTENT_TYPES_*",
            "paramcounter_.*",
            "paramcounter",
            "ent_typ",
        ] {
            let sel = selector(raw);
            assert!(matches!(sel, Selector::Contains(_)), "{raw}: {sel:?}");
            let regex = regex::bytes::RegexBuilder::new(raw)
                .case_insensitive(true)
                .build()
                .expect("compiles");
            for key in keys {
                assert_eq!(sel.matches(key), regex.is_match(key), "{raw} on {key:?}");
            }
        }
        for raw in ["a.b", "ab+", "a*b", ".*", "a|b", "a$", "(ab)*"] {
            assert!(matches!(selector(raw), Selector::Regex(_)), "{raw}");
        }
    }
}
