//! The `admin:` section: where operators and Prometheus reach the daemon. A unix socket by
//! default (file permissions are the authentication); TCP only with a bearer token or mTLS.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Deserializer};

use crate::tls::{ClientAuth, TlsSettings};

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// The unix socket; default `<state_dir>/<instance>/admin.sock`.
    pub socket: Option<PathBuf>,
    /// Permissions of the socket file, octal: `"0600"` (owner only, the default) or `"0660"`
    /// (members of the daemon's group may administer). Never world-accessible.
    #[serde(deserialize_with = "de_mode")]
    #[schemars(with = "String")]
    pub socket_mode: u32,
    /// An optional TCP listener (remote Prometheus, automation). Needs `tokens` or `tls` with
    /// `client_auth: required`: `gateway check` rejects an unauthenticated TCP listener.
    pub tcp: Option<AdminTcp>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            socket: None,
            socket_mode: 0o600,
            tcp: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminTcp {
    /// `127.0.0.1:9901`, `[::1]:9901`, ...
    #[schemars(with = "String")]
    pub address: SocketAddr,
    /// Bearer tokens; each request must send one as `Authorization: Bearer <token>`. The
    /// token's id is recorded as the actor (`admin:<id>`) in the audit journal.
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
    /// TLS for the listener; with `client_auth: required` a verified client certificate
    /// authenticates on its own (actor `admin:cert:<subject>`).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

/// A bearer token, read from a file or an environment variable (never inline in the file).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Names the token in the audit journal; never the token itself.
    pub id: String,
    /// A file holding the token (surrounding whitespace ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default)]
    pub env: Option<String>,
}

impl AdminSection {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.socket_mode & 0o007 != 0 || self.socket_mode & 0o600 != 0o600 {
            return Err((
                "socket_mode",
                format!(
                    "admin.socket_mode {:04o}: the owner needs read and write, others nothing \
                     (0600 or 0660)",
                    self.socket_mode
                ),
            ));
        }
        let Some(tcp) = &self.tcp else {
            return Ok(());
        };
        let mtls = tcp
            .tls
            .as_ref()
            .is_some_and(|t| t.client_auth == ClientAuth::Required);
        if tcp.tokens.is_empty() && !mtls {
            return Err((
                "tcp",
                "admin.tcp: a TCP admin listener needs `tokens` or `tls` with `client_auth: \
                 required`; it is never unauthenticated (use the unix socket for local access)"
                    .into(),
            ));
        }
        if let Some(tls) = &tcp.tls {
            tls.validate()
                .map_err(|e| ("tls", format!("admin.tcp.{e}")))?;
        }
        let mut ids = std::collections::HashSet::new();
        for t in &tcp.tokens {
            let valid = !t.id.is_empty()
                && t.id.len() <= 64
                && t.id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err((
                    "id",
                    format!(
                        "admin token id `{}` must be 1-64 letters, digits, `-`, `_` or `.`",
                        t.id
                    ),
                ));
            }
            if !ids.insert(t.id.as_str()) {
                return Err(("id", format!("admin token id `{}` is used twice", t.id)));
            }
            if t.file.is_some() == t.env.is_some() {
                return Err((
                    "tokens",
                    format!("admin token `{}`: set exactly one of `file` or `env`", t.id),
                ));
            }
        }
        Ok(())
    }

    /// The socket path, defaulted under the instance's state directory.
    pub fn socket_path(&self, state_dir: &std::path::Path, instance: &str) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| default_socket(state_dir, instance))
    }
}

/// `<state_dir>/<instance>/admin.sock`: where the CLI looks when the file names no socket.
pub fn default_socket(state_dir: &std::path::Path, instance: &str) -> PathBuf {
    state_dir.join(instance).join("admin.sock")
}

fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    u32::from_str_radix(s.trim().trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an octal mode like 0600")))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(Path::new("gw.yaml"), text)
    }

    #[test]
    fn the_socket_defaults_under_the_state_directory_owner_only() {
        let c = parse("instance: edge\nstate_dir: /srv/gw\n").expect("valid");
        assert_eq!(c.admin.socket_mode, 0o600);
        assert_eq!(
            c.admin.socket_path(&c.state_dir, &c.instance),
            Path::new("/srv/gw/edge/admin.sock")
        );
    }

    #[test]
    fn a_world_accessible_socket_is_rejected() {
        let e = parse("admin:\n  socket_mode: \"0666\"\n").expect_err("0666");
        assert_eq!(e.line, 2, "{e}");
        let e = parse("admin:\n  socket_mode: \"rw\"\n").expect_err("not octal");
        assert!(e.reason.contains("octal"), "{e}");
        parse("admin:\n  socket_mode: \"0660\"\n").expect("group may administer");
    }

    #[test]
    fn a_token_comes_from_exactly_one_place() {
        let e = parse(
            "admin:\n  tcp:\n    address: \"127.0.0.1:9901\"\n    tokens: [{ id: a, file: t, env: T }]\n",
        )
        .expect_err("both");
        assert!(e.reason.contains("exactly one"), "{e}");
        let e = parse(
            "admin:\n  tcp:\n    address: \"127.0.0.1:9901\"\n    tokens: [{ id: \"a b\", env: T }]\n",
        )
        .expect_err("bad id");
        assert!(e.reason.contains("token id"), "{e}");
    }
}
