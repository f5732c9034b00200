//! `postgres://` URIs: what tokio-postgres understands, plus Flujo's own options, and a description that never
//! carries the password.
//!
//! `postgres://user:pass@host:port/db?sslmode=…&schema=…&pool_size=…&sslrootcert=FILE`. The libpq-style
//! parameters tokio-postgres knows (`connect_timeout`, `application_name`, `options`, `keepalives`, …) pass
//! through; `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`), `sslrootcert`, `schema`
//! and `pool_size` are read here.

use std::time::Duration;

use flujo_core::StoreError;
use tokio_postgres::config::Host;

/// How a connection uses TLS (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it (the certificate is not checked), else plain; libpq's default.
    Prefer,
    /// TLS always; the certificate is not checked (as libpq does without a root certificate).
    Require,
    /// TLS always; the certificate must chain to a trusted root (`sslrootcert`, else the web PKI roots).
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

/// A parsed `postgres://` URI.
#[derive(Clone)]
pub(crate) struct PgConfig {
    pub pg: tokio_postgres::Config,
    pub ssl: SslMode,
    pub root_cert: Option<String>,
    pub schema: String,
    pub pool_size: usize,
    /// `postgres://user@host:port/db` (no password, no options).
    pub describe: String,
    /// `host:port`, for error messages.
    pub endpoint: String,
    pub database: String,
    pub user: String,
}

/// The default number of pooled connections.
const DEFAULT_POOL_SIZE: usize = 8;

/// How long a connection attempt may take when the URI does not say (`connect_timeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn bad(message: impl Into<String>) -> StoreError {
    StoreError::Unavailable(format!("invalid postgres:// URI: {}", message.into()))
}

/// Decodes `%XX` escapes (a malformed escape is kept as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `name` is a plain SQL identifier we are willing to use as a schema name.
fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PgConfig {
    /// Parses `uri` (scheme `postgres` or `postgresql`). Errors never quote the password.
    pub fn parse(uri: &str) -> Result<Self, StoreError> {
        let uri = uri.trim();
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| bad("expected postgres://…"))?;
        if !matches!(scheme.to_ascii_lowercase().as_str(), "postgres" | "postgresql") {
            return Err(bad(format!("scheme `{scheme}://` is not postgres://")));
        }
        let (base, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let mut ssl = SslMode::Prefer;
        let mut root_cert = None;
        let mut schema = "public".to_owned();
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut passed = Vec::new();
        let mut has_timeout = false;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match key {
                "sslmode" => {
                    ssl = match value.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(bad(format!(
                                "sslmode `{other}` (expected disable, prefer, require, verify-ca or verify-full)"
                            )))
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(value),
                "schema" => {
                    if !valid_schema(&value) {
                        return Err(bad(format!(
                            "schema `{value}` (expected a lower-case identifier: letters, digits, `_`; at most 63)"
                        )));
                    }
                    schema = value;
                }
                "pool_size" => {
                    pool_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| bad(format!("pool_size `{value}` (expected 1 to 1024)")))?;
                }
                _ => {
                    has_timeout |= key == "connect_timeout";
                    passed.push(pair);
                }
            }
        }
        // tokio-postgres parses the rest, TLS set apart (its own `sslmode` knows only three modes).
        let mut pg_uri = format!("postgres://{base}");
        if !passed.is_empty() {
            pg_uri.push('?');
            pg_uri.push_str(&passed.join("&"));
        }
        let mut pg: tokio_postgres::Config = pg_uri.parse().map_err(|e: tokio_postgres::Error| {
            // Name the options given (never their values: one may be the password).
            let keys: Vec<&str> = passed.iter().map(|p| p.split_once('=').map_or(*p, |(k, _)| k)).collect();
            let given = if keys.is_empty() { String::new() } else { format!("; options given: {}", keys.join(", ")) };
            bad(format!(
                "{e}{given} (tokio-postgres reads libpq's: connect_timeout, application_name, options, keepalives, \
                 target_session_attrs, …; Flujo's own: sslmode, sslrootcert, schema, pool_size)"
            ))
        })?;
        pg.ssl_mode(match ssl {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if !has_timeout {
            pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("flujo");
        }
        let user = pg.get_user().map(str::to_owned).unwrap_or_else(|| std::env::var("USER").unwrap_or_default());
        if pg.get_user().is_none() && !user.is_empty() {
            pg.user(&user);
        }
        let database = pg.get_dbname().map(str::to_owned).unwrap_or_else(|| user.clone());
        let host = match pg.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => {
                pg.host("localhost");
                "localhost".to_owned()
            }
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let endpoint = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let who = if user.is_empty() { String::new() } else { format!("{user}@") };
        let describe = if schema == "public" {
            format!("postgres://{who}{endpoint}/{database}")
        } else {
            format!("postgres://{who}{endpoint}/{database}?schema={schema}")
        };
        Ok(PgConfig { pg, ssl, root_cert, schema, pool_size, describe, endpoint, database, user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flujo_options_and_passes_the_rest() {
        let c = PgConfig::parse(
            "postgresql://ann:s%40cret@db.example:6543/flows?sslmode=verify-full&schema=team_a&pool_size=3&connect_timeout=2&application_name=x",
        )
        .unwrap();
        assert_eq!(c.ssl, SslMode::VerifyFull);
        assert_eq!(c.schema, "team_a");
        assert_eq!(c.pool_size, 3);
        assert_eq!(c.endpoint, "db.example:6543");
        assert_eq!(c.database, "flows");
        assert_eq!(c.user, "ann");
        assert_eq!(c.pg.get_password(), Some(&b"s@cret"[..]));
        assert_eq!(c.pg.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(c.describe, "postgres://ann@db.example:6543/flows?schema=team_a");
        assert!(!c.describe.contains("cret"));
    }

    #[test]
    fn defaults() {
        let c = PgConfig::parse("postgres://ann@localhost/flows").unwrap();
        assert_eq!((c.ssl, c.schema.as_str(), c.pool_size), (SslMode::Prefer, "public", DEFAULT_POOL_SIZE));
        assert_eq!(c.endpoint, "localhost:5432");
        assert_eq!(c.pg.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(c.describe, "postgres://ann@localhost:5432/flows");
    }

    #[test]
    fn bad_options_are_named_without_the_password() {
        for (uri, needle) in [
            ("postgres://a:topsecret@h/db?sslmode=sometimes", "sslmode `sometimes`"),
            ("postgres://a:topsecret@h/db?schema=Robert;drop", "schema `Robert;drop`"),
            ("postgres://a:topsecret@h/db?pool_size=0", "pool_size `0`"),
            ("postgres://a:topsecret@h/db?bogus_option=1", "bogus_option"),
        ] {
            let Err(StoreError::Unavailable(m)) = PgConfig::parse(uri) else { panic!("{uri} parsed") };
            assert!(m.contains(needle), "{m}");
            assert!(!m.contains("topsecret"), "{m}");
        }
    }
}
