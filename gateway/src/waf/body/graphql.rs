//! GraphQL documents read for their values, on routes that serve GraphQL over HTTP.
//!
//! CRS reads a GraphQL document (`{"query": "query($first: Int) { users(first: $first) ... }"}`)
//! as text, and its syntax looks like injection to it: `$first` like a MongoDB operator (942290),
//! braces and parentheses like SQL (942190), a line starting with a keyword like a shell command
//! (932235). A GraphQL server only ever reads that field as a GraphQL document, and what reaches
//! its resolvers from it are the literal values (strings, numbers); names are identifiers
//! (`[_A-Za-z][_0-9A-Za-z]*`), comments are ignored. So on a route marked `graphql`, an argument
//! that holds a document which parses as GraphQL is replaced by its literal values and the text
//! of its comments (which a server ignores but a log shows), each an argument the rules judge
//! as they judge any value. A value that does not parse stays as it
//! is: the rules see all of it, and the server would refuse it anyway. Variables travel as JSON
//! (`variables`) and are inspected as JSON arguments already.
//!
//! apollo-parser (Apollo's spec-compliant, error-resilient parser) rather than a hand-written
//! lexer: "parses as GraphQL" must mean what a server's parser means, not only "lexes".

use apollo_parser::{Parser, SyntaxKind, cst};

use super::super::variables::{Entry, RequestData};

/// Deepest nesting apollo-parser is allowed (its default is 500); a deeper document is not read
/// as GraphQL and keeps its text as the argument.
const RECURSION_LIMIT: usize = 128;

/// The literal values and comment texts of `doc` in document order (string contents
/// unescaped, numbers as written, comments without their `#`), or `None` when it is not a
/// GraphQL document.
pub fn literals(doc: &str) -> Option<Vec<Vec<u8>>> {
    let tree = Parser::new(doc).recursion_limit(RECURSION_LIMIT).parse();
    // Past the recursion limit is an error too.
    if tree.errors().len() > 0 {
        return None;
    }
    let document = tree.document();
    let syntax = cst::CstNode::syntax(&document);
    let mut out = Vec::new();
    for element in syntax.descendants_with_tokens() {
        match element.kind() {
            SyntaxKind::STRING_VALUE => {
                if let Some(s) = element
                    .into_node()
                    .and_then(<cst::StringValue as cst::CstNode>::cast)
                {
                    out.push(String::from(&s).into_bytes());
                }
            }
            SyntaxKind::INT_VALUE | SyntaxKind::FLOAT_VALUE => {
                if let Some(node) = element.as_node() {
                    out.push(node.text().to_string().into_bytes());
                }
            }
            // A server ignores comments, but a log or a tool that shows the raw document does
            // not: a payload hidden in one is judged like a value.
            SyntaxKind::COMMENT => {
                if let Some(token) = element.as_token() {
                    let text = token.text();
                    out.push(text.strip_prefix('#').unwrap_or(text).as_bytes().to_vec());
                }
            }
            _ => {}
        }
    }
    Some(out)
}

/// Whether an argument by this name holds a GraphQL document: `query` in a query string;
/// `json.query`, or `json.N.query` in a batch, in a JSON body.
fn holds_document(name: &[u8], from_body: bool) -> bool {
    if !from_body {
        return name == b"query";
    }
    let Some(rest) = name.strip_prefix(b"json.") else {
        return false;
    };
    rest == b"query"
        || rest
            .strip_suffix(b".query")
            .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit))
}

/// Replaces each argument of `data`'s query string (`from_body == false`) or body that holds a
/// GraphQL document by the document's literal values, named `<name>.0`, `<name>.1`, ...; at most
/// `max_args` arguments in all: `true` when some were dropped for it.
pub fn expand_documents(data: &mut RequestData, from_body: bool, max_args: usize) -> bool {
    let args = if from_body {
        &data.args_post
    } else {
        &data.args_get
    };
    if !args.iter().any(|e| holds_document(&e.key, from_body)) {
        return false;
    }
    let taken = std::mem::take(if from_body {
        &mut data.args_post
    } else {
        &mut data.args_get
    });
    let mut out: Vec<Entry> = Vec::with_capacity(taken.len());
    let mut dropped = false;
    for e in taken {
        let values = if holds_document(&e.key, from_body) {
            std::str::from_utf8(&e.value).ok().and_then(literals)
        } else {
            None
        };
        match values {
            Some(values) => {
                for (i, v) in values.into_iter().enumerate() {
                    if out.len() >= max_args {
                        dropped = true;
                        break;
                    }
                    let mut key = e.key.clone();
                    key.push(b'.');
                    key.extend_from_slice(i.to_string().as_bytes());
                    out.push(data.arg_entry(key, v));
                }
            }
            None => out.push(e),
        }
    }
    if from_body {
        data.args_post = out;
    } else {
        data.args_get = out;
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Option<Vec<Vec<u8>>>) -> Option<Vec<String>> {
        v.map(|v| {
            v.into_iter()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .collect()
        })
    }

    #[test]
    fn a_documents_values_are_its_literals_and_nothing_of_its_syntax() {
        let doc = r#"
            # list the first users
            query Users($first: Int = 10, $after: String) {
              users(first: $first, after: $after, filter: { name: "O'Brien", score: 4.5 }) {
                edges { node { id name @include(if: true) } }
              }
              search(text: """a block
                string""", kind: USER)
            }
            fragment F on User { id }
        "#;
        assert_eq!(
            text(literals(doc)),
            Some(vec![
                " list the first users".into(),
                "10".into(),
                "O'Brien".into(),
                "4.5".into(),
                "a block\nstring".into()
            ])
        );
        // Escapes are what the server reads.
        assert_eq!(
            text(literals(r#"{ a(x: "\u0027 OR 1=1 --") }"#)),
            Some(vec!["' OR 1=1 --".into()])
        );
    }

    #[test]
    fn text_that_is_not_a_graphql_document_is_not_read_as_one() {
        for not_graphql in [
            "1 or 1=1",
            "' OR 1=1 --",
            "select * from users",
            "{ a(x: \"unterminated) }",
            "<script>alert(1)</script>",
            "",
        ] {
            assert_eq!(literals(not_graphql), None, "{not_graphql:?}");
        }
        let deep = format!("{}{}", "{a".repeat(200), "}".repeat(200));
        assert_eq!(literals(&deep), None);
    }

    #[test]
    fn only_the_query_argument_is_a_document() {
        assert!(holds_document(b"query", false));
        assert!(!holds_document(b"json.query", false));
        assert!(holds_document(b"json.query", true));
        assert!(holds_document(b"json.3.query", true));
        assert!(!holds_document(b"json.variables.query", true));
        assert!(!holds_document(b"json..query", true));
        assert!(!holds_document(b"query", true));

        let mut data = RequestData::default();
        let doc = data.arg_entry("json.query", "{ a(x: \"v1\", y: 2) }");
        let other = data.arg_entry("json.operationName", "A");
        let bad = data.arg_entry("json.0.query", "1 or 1=1");
        data.args_post = vec![doc, other, bad];
        assert!(!expand_documents(&mut data, true, 100));
        assert_eq!(
            super::super::arg_pairs(&data.args_post),
            [
                ("json.query.0".into(), "v1".into()),
                ("json.query.1".into(), "2".into()),
                ("json.operationName".into(), "A".into()),
                ("json.0.query".into(), "1 or 1=1".into()),
            ]
        );

        // The values count toward the body's argument limit.
        let mut data = RequestData::default();
        let doc = data.arg_entry("json.query", "{ a(x: 1, y: 2, z: 3) }");
        data.args_post = vec![doc];
        assert!(expand_documents(&mut data, true, 2));
        assert_eq!(data.args_post.len(), 2);
    }
}
