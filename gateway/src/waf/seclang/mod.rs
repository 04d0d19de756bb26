//! SecLang, the ModSecurity rule language, as far as CRS v4 and operators' own rule files use it:
//! reading files (line continuations, comments, `Include` of files and globs) into directives with
//! their `file:line`, and splitting action lists and variable lists.
//!
//! Supported directives: `SecRule`, `SecAction`, `SecMarker`, `SecDefaultAction`,
//! `SecRuleRemoveById`, `SecRuleRemoveByTag`, `SecRuleUpdateTargetById`,
//! `SecRuleUpdateTargetByTag`, `SecComponentSignature`, `SecRuleEngine`, `Include`; the engine-wide
//! switches the gateway owns itself (`SecRequestBodyAccess`, limits, logs) are accepted and ignored
//! when they would not change what a rule sees. Anything else is an error naming `file:line`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use super::WafError;

/// One directive with where it was written.
#[derive(Clone, Debug)]
pub struct Directive {
    pub file: Arc<Path>,
    pub line: usize,
    pub name: String,
    pub args: Vec<String>,
}

impl Directive {
    pub fn error(&self, reason: impl Into<String>) -> WafError {
        WafError::Rule {
            file: self.file.to_path_buf(),
            line: self.line,
            reason: reason.into(),
        }
    }
}

/// Directives the gateway decides itself (body access, limits, logging): accepted so stock
/// configuration files load, with no effect.
const IGNORED: &[&str] = &[
    "secrequestbodyaccess",
    "secresponsebodyaccess",
    "secrequestbodylimit",
    "secrequestbodynofileslimit",
    "secrequestbodyinmemorylimit",
    "secrequestbodylimitaction",
    "secresponsebodylimit",
    "secresponsebodylimitaction",
    "secresponsebodymimetype",
    "secpcrematchlimit",
    "secpcrematchlimitrecursion",
    "secauditengine",
    "secauditlog",
    "secauditlogparts",
    "secauditlogtype",
    "secauditlogformat",
    "secauditlogrelevantstatus",
    "secauditlogstoragedir",
    "secdebuglog",
    "secdebugloglevel",
    "sectmpdir",
    "secdatadir",
    "secuploaddir",
    "secargumentseparator",
    "seccookieformat",
    "secunicodemapfile",
    "secstatusengine",
    "seccollectiontimeout",
    "secargumentslimit",
    "secrequestbodyjsondepthlimit",
    "secuploadfilemode",
    "secuploadkeepfiles",
    "sectmpsaveuploadedfiles",
];

/// Reads `path` (a file, a directory of `*.conf` files, or a glob) into directives, following
/// `Include`.
pub fn read_path(path: &Path, out: &mut Vec<Directive>, depth: usize) -> Result<(), WafError> {
    if depth > 16 {
        return Err(WafError::Io {
            path: path.to_owned(),
            reason: "Include nested too deep (a loop?)".into(),
        });
    }
    for file in expand(path)? {
        let text = std::fs::read(&file).map_err(|e| WafError::Io {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        let text = String::from_utf8_lossy(&text);
        let file: Arc<Path> = Arc::from(file.as_path());
        for d in parse_text(&file, &text)? {
            if d.name.eq_ignore_ascii_case("include") {
                let Some(target) = d.args.first() else {
                    return Err(d.error("Include needs a path"));
                };
                let target = Path::new(target);
                let resolved = if target.is_relative() {
                    file.parent().unwrap_or(Path::new("")).join(target)
                } else {
                    target.to_owned()
                };
                read_path(&resolved, out, depth + 1).map_err(|e| match e {
                    WafError::Io { path, reason } => {
                        d.error(format!("Include {}: {reason}", path.display()))
                    }
                    other => other,
                })?;
            } else {
                out.push(d);
            }
        }
    }
    Ok(())
}

/// A path, a directory (its `*.conf` files, sorted) or a glob in the last component.
pub fn expand(path: &Path) -> Result<Vec<PathBuf>, WafError> {
    let io = |reason: String| WafError::Io {
        path: path.to_owned(),
        reason,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.contains(['*', '?', '[']) {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(e.to_string()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(name, n)))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        return Ok(files);
    }
    if path.is_dir() {
        return expand(&path.join("*.conf"));
    }
    if !path.exists() {
        return Err(io("no such file".into()));
    }
    Ok(vec![path.to_owned()])
}

/// Shell-style `*` and `?` matching of one file name (character classes are not needed by any
/// rule set we load, so `[` matches itself).
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Splits a configuration text into directives: `\` at the end of a line continues it, `#`
/// starts a comment line, arguments are words or double-quoted strings (`\"` inside).
pub fn parse_text(file: &Arc<Path>, text: &str) -> Result<Vec<Directive>, WafError> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if logical.is_empty() {
            start = i + 1;
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
        }
        if let Some(cont) = line.strip_suffix('\\') {
            logical.push_str(cont);
            continue;
        }
        logical.push_str(line);
        let words = split_words(&logical).map_err(|reason| WafError::Rule {
            file: file.to_path_buf(),
            line: start,
            reason,
        })?;
        logical.clear();
        let mut words = words.into_iter();
        let Some(name) = words.next() else { continue };
        let d = Directive {
            file: Arc::clone(file),
            line: start,
            name,
            args: words.collect(),
        };
        out.push(d);
    }
    if !logical.trim().is_empty() {
        return Err(WafError::Rule {
            file: file.to_path_buf(),
            line: start,
            reason: "the file ends inside a continued line".into(),
        });
    }
    Ok(out)
}

fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let mut word = String::new();
        if c == '"' || c == '\'' {
            let quote = c;
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&quote) {
                    word.push(quote);
                    chars.next();
                } else if c == quote {
                    closed = true;
                    break;
                } else {
                    word.push(c);
                }
            }
            if !closed {
                return Err(format!("unterminated {quote}-quoted argument"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

/// Whether a directive is one the gateway accepts and ignores.
pub fn ignored(name: &str) -> bool {
    IGNORED.contains(&name.to_ascii_lowercase().as_str())
}

/// One `name` or `name:value` of an action list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAction {
    pub name: String,
    pub value: Option<String>,
}

/// Splits `id:1,phase:2,msg:'a, b',t:none` at top-level commas; single-quoted values keep their
/// commas and lose their quotes (`\'` inside).
pub fn split_actions(s: &str) -> Result<Vec<RawAction>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let name_start = i;
        while i < b.len() && b[i] != b':' && b[i] != b',' {
            i += 1;
        }
        let name = s[name_start..i].trim().to_owned();
        let mut value = None;
        if i < b.len() && b[i] == b':' {
            i += 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i < b.len() && b[i] == b'\'' {
                i += 1;
                let mut v = String::new();
                let mut closed = false;
                let mut seg = i;
                while i < b.len() {
                    if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'\'' {
                        v.push_str(&s[seg..i]);
                        v.push('\'');
                        i += 2;
                        seg = i;
                    } else if b[i] == b'\'' {
                        v.push_str(&s[seg..i]);
                        closed = true;
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
                if !closed {
                    return Err(format!("unterminated quote in action `{name}`"));
                }
                value = Some(v);
            } else {
                let vs = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                value = Some(s[vs..i].trim().to_owned());
            }
        }
        if name.is_empty() {
            return Err("empty action".into());
        }
        out.push(RawAction { name, value });
    }
    Ok(out)
}

/// One element of a variable list: `ARGS`, `!ARGS:foo`, `&TX:x`, `REQUEST_COOKIES:/^__utm/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTarget {
    pub negated: bool,
    pub count: bool,
    pub name: String,
    pub selector: Option<RawSelector>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawSelector {
    Key(String),
    Regex(String),
}

/// Splits `A|!B:x|C:/re|gex/` at the `|` that separate variables (not those in a regex).
pub fn split_targets(s: &str) -> Result<Vec<RawTarget>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b'|' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let mut negated = false;
        let mut count = false;
        if b[i] == b'!' {
            negated = true;
            i += 1;
        } else if b[i] == b'&' {
            count = true;
            i += 1;
        }
        let ns = i;
        while i < b.len() && b[i] != b':' && b[i] != b'|' {
            i += 1;
        }
        let name = s[ns..i].trim().to_owned();
        let mut selector = None;
        if i < b.len() && b[i] == b':' {
            i += 1;
            if i < b.len() && b[i] == b'/' && !name.eq_ignore_ascii_case("XML") {
                i += 1;
                let rs = i;
                loop {
                    if i >= b.len() {
                        return Err(format!("unterminated regex selector of `{name}`"));
                    }
                    if b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'/' && (i + 1 == b.len() || b[i + 1] == b'|') {
                        break;
                    }
                    i += 1;
                }
                selector = Some(RawSelector::Regex(s[rs..i].to_owned()));
                i += 1;
            } else if i < b.len() && b[i] == b'\'' {
                i += 1;
                let ks = i;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                selector = Some(RawSelector::Key(s[ks..i].to_owned()));
                i += 1;
            } else {
                let ks = i;
                while i < b.len() && b[i] != b'|' {
                    i += 1;
                }
                selector = Some(RawSelector::Key(s[ks..i].trim().to_owned()));
            }
        }
        if name.is_empty() {
            return Err("empty variable name".into());
        }
        out.push(RawTarget {
            negated,
            count,
            name,
            selector,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Directive> {
        parse_text(&Arc::from(Path::new("t.conf")), text).expect("parses")
    }

    #[test]
    fn continuations_comments_and_quotes() {
        let d = parse(
            "# comment\n\nSecRule ARGS \"@rx a\\\"b\" \\\n    \"id:1,\\\n    phase:2\"\nSecMarker END\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "SecRule");
        assert_eq!(d[0].line, 3);
        assert_eq!(d[0].args, vec!["ARGS", "@rx a\"b", "id:1,    phase:2"]);
        assert_eq!(d[1].line, 6);
        assert_eq!(d[1].args, vec!["END"]);
    }

    #[test]
    fn unterminated_quote_names_the_line() {
        let err = parse_text(&Arc::from(Path::new("x.conf")), "\nSecRule ARGS \"@rx a")
            .expect_err("fails");
        assert!(err.to_string().starts_with("x.conf:2:"), "{err}");
    }

    #[test]
    fn actions_with_quoted_commas() {
        let a =
            split_actions("id:1, msg:'a, b',t:none,setvar:'tx.x=+%{tx.y}',chain,logdata:'it\\'s'")
                .expect("splits");
        assert_eq!(a.len(), 6);
        assert_eq!(a[1].value.as_deref(), Some("a, b"));
        assert_eq!(a[3].value.as_deref(), Some("tx.x=+%{tx.y}"));
        assert_eq!(a[4].value, None);
        assert_eq!(a[5].value.as_deref(), Some("it's"));
    }

    #[test]
    fn targets_with_regex_selectors() {
        let t = split_targets("REQUEST_COOKIES|!REQUEST_COOKIES:/^(?:a|b)$/|&ARGS|XML:/*|ARGS:foo")
            .expect("splits");
        assert_eq!(t.len(), 5);
        assert!(t[1].negated);
        assert_eq!(t[1].selector, Some(RawSelector::Regex("^(?:a|b)$".into())));
        assert!(t[2].count);
        assert_eq!(t[3].selector, Some(RawSelector::Key("/*".into())));
        assert_eq!(t[4].selector, Some(RawSelector::Key("foo".into())));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*.conf", "REQUEST-901.conf"));
        assert!(!wildcard("*.conf", "x.conf.example"));
        assert!(wildcard("R?Q*", "REQ-1"));
    }
}
