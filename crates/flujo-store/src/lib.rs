//! Flujo state stores: implementations of [`flujo_core::Store`] and the URI that selects one.
//!
//! [`MemoryStore`] keeps everything in process memory (tests, benchmarks, one-shot runs). `SqliteStore`
//! (feature `sqlite`, on by default) keeps runs, journals and blobs in one local SQLite file, with a
//! dedicated writer thread that group-commits concurrent writes. [`open_store`] turns a store URI
//! (`memory://`, `sqlite:///relative.db`, `sqlite:////absolute.db`, `postgres://…` with the `postgres`
//! feature) into
//! a shared `Arc<dyn Store>`. With the `test-suite` feature, `conformance` exposes the backend-independent test
//! suite that every store must pass, so each backend is held to exactly the same semantics.
//!
//! ```
//! let store = flujo_store::open_store("memory://").unwrap();
//! assert_eq!(store.describe(), "memory://");
//! ```

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod codec;
#[cfg(feature = "test-suite")]
pub mod conformance;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod vector;
#[cfg(feature = "test-suite")]
pub mod vector_conformance;

use std::sync::Arc;

use flujo_core::{RunStatus, Store, StoreError};

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresVectorStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, GroupCommitStats, SqliteOptions, SqliteStats, SqliteStore, SqliteVectorStore};
pub use vector::{MemoryVectorStore, NullVectorStore};

/// Opens the store a URI names.
///
/// * `memory://` (or bare `memory`): a new, empty [`MemoryStore`]; every call returns a distinct store.
/// * `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (parent directories are created) or
///   `sqlite://:memory:`, optionally followed by `?durability=normal|strict`: a `SqliteStore` (feature
///   `sqlite`; without it, [`StoreError::Unavailable`]). Opening blocks briefly while the file is opened and
///   migrated.
/// * `postgres://user:pass@host:port/db?sslmode=…&schema=…&pool_size=…` (or `postgresql://`): a
///   `PostgresStore` (feature `postgres`): connects, creates or migrates the tables, and returns (this blocks
///   briefly, on a helper thread, so it works inside and outside an async runtime). In async code,
///   `PostgresStore::connect` does the same without blocking.
/// * anything else: [`StoreError::Unavailable`] naming the scheme.
///
/// Error messages name only the scheme, never the rest of the URI (which may carry credentials).
pub fn open_store(uri: &str) -> Result<Arc<dyn Store>, StoreError> {
    let uri = uri.trim();
    let (scheme, rest) = match uri.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None if uri.eq_ignore_ascii_case("memory") => ("memory", ""),
        None => {
            return Err(StoreError::Unavailable(format!(
                "store URI has no scheme (expected `scheme://…`); supported: {SUPPORTED}"
            )))
        }
    };
    match scheme.to_ascii_lowercase().as_str() {
        "memory" if rest.is_empty() => Ok(Arc::new(MemoryStore::new())),
        "memory" => Err(StoreError::Unavailable(
            "the memory:// store takes no path or options; use exactly `memory://`".to_owned(),
        )),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(sqlite::open_uri(rest)?)),
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => Err(not_built("sqlite")),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(postgres::PostgresStore::connect_blocking(uri)?)),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(not_built("postgres")),
        "" => Err(StoreError::Unavailable(format!("store URI has an empty scheme; supported: {SUPPORTED}"))),
        other => Err(StoreError::Unavailable(format!("unknown store scheme `{other}://`; supported: {SUPPORTED}"))),
    }
}

/// Opens the vector store (memory, SPEC §11) a URI names.
///
/// * `null` (or `none`): [`NullVectorStore`], memory off.
/// * `memory://`: a new, empty [`MemoryVectorStore`].
/// * `sqlite:///relative.db`, `sqlite:////absolute.db`, `sqlite://:memory:` (options after `?` are ignored):
///   a `SqliteVectorStore` in that Flujo database — by default the state file itself.
/// * `postgres://…` (feature `postgres`): a `PostgresVectorStore` (pgvector) in that database and schema.
pub fn open_vector_store(uri: &str) -> Result<Arc<dyn flujo_core::VectorStore>, StoreError> {
    let uri = uri.trim();
    if uri.eq_ignore_ascii_case("null") || uri.eq_ignore_ascii_case("none") {
        return Ok(Arc::new(NullVectorStore));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        if uri.eq_ignore_ascii_case("memory") {
            return Ok(Arc::new(MemoryVectorStore::new()));
        }
        return Err(StoreError::Unavailable(format!(
            "memory URI has no scheme (expected `scheme://…`); supported: null, {SUPPORTED}"
        )));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "memory" if rest.is_empty() => Ok(Arc::new(MemoryVectorStore::new())),
        "memory" => Err(StoreError::Unavailable(
            "the memory:// store takes no path or options; use exactly `memory://`".to_owned(),
        )),
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let target = rest.split_once('?').map_or(rest, |(t, _)| t);
            if target == ":memory:" {
                return Ok(Arc::new(SqliteVectorStore::open_in_memory()?));
            }
            match target.strip_prefix('/') {
                Some(path) if !path.is_empty() && path != "/" => Ok(Arc::new(SqliteVectorStore::open(path)?)),
                _ => Err(StoreError::Unavailable(
                    "sqlite:// URI names no database file; use `sqlite:///relative/path.db` or \
                     `sqlite:////absolute/path.db`"
                        .to_owned(),
                )),
            }
        }
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => Err(not_built("sqlite")),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => postgres::open_vector_store_blocking(uri),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(not_built("postgres")),
        other => Err(StoreError::Unavailable(format!(
            "unknown memory store scheme `{other}://`; supported: null, {SUPPORTED}"
        ))),
    }
}

const SUPPORTED: &str = "memory://, sqlite:// (feature `sqlite`), postgres:// (feature `postgres`)";

#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
fn not_built(scheme: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "the {scheme}:// store is not in this build of flujo-store: enable its cargo feature `{scheme}`"
    ))
}

/// The [`StoreError::Conflict`] of a compare-and-set [`flujo_core::RunStore::update_run`] whose stored
/// status is not among `expected`. Every backend builds it here so that messages are identical.
pub fn status_conflict(run_id: &str, expected: &[RunStatus], actual: RunStatus) -> StoreError {
    let expected = expected.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ");
    StoreError::Conflict { run_id: run_id.to_owned(), expected, actual: actual.as_str().to_owned() }
}

/// The [`StoreError::Conflict`] of an update or heartbeat whose expected owner is not the stored one.
pub fn owner_conflict(run_id: &str, expected: Option<&str>, actual: Option<&str>) -> StoreError {
    StoreError::Conflict {
        run_id: run_id.to_owned(),
        expected: format!("owner {}", expected.unwrap_or("none")),
        actual: format!("owner {}", actual.unwrap_or("none")),
    }
}

/// The fence of [`flujo_core::JournalStore::append_fenced`]: the run must be `running` under `owner`. Every
/// backend checks it here so that the errors are identical (status first, then owner).
pub fn check_fence(run_id: &str, status: RunStatus, stored_owner: Option<&str>, owner: &str) -> Result<(), StoreError> {
    if status != RunStatus::Running {
        return Err(status_conflict(run_id, &[RunStatus::Running], status));
    }
    if stored_owner != Some(owner) {
        return Err(owner_conflict(run_id, Some(owner), stored_owner));
    }
    Ok(())
}

/// The [`StoreError::Conflict`] of a [`flujo_core::JournalStore::append`] at the wrong position: the
/// journal holds `next_seq` records, so only seq `next_seq` may be appended. This is how two writers on
/// one run are detected.
pub fn seq_conflict(run_id: &str, next_seq: u64, got_seq: u64) -> StoreError {
    StoreError::Conflict {
        run_id: run_id.to_owned(),
        expected: format!("next journal seq {next_seq}"),
        actual: format!("appending seq {got_seq}"),
    }
}

/// `uri` with the password of its user-info part replaced by `***` (any scheme; for messages and
/// `show-config`). A URI without a password is returned as is.
pub fn mask_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else { return uri.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else { return uri.to_owned() };
    let (userinfo, host) = authority.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{host}{tail}"),
        None => uri.to_owned(),
    }
}

/// The blake3 hex hash under which [`flujo_core::BlobStore::put_blob`] stores `bytes`.
pub fn blob_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(uri: &str) -> String {
        match open_store(uri) {
            Err(StoreError::Unavailable(m)) => m,
            Err(e) => panic!("{uri}: unexpected error {e}"),
            Ok(s) => panic!("{uri}: unexpectedly opened {}", s.describe()),
        }
    }

    #[test]
    fn memory_uri_opens_a_fresh_store() {
        let a = open_store("memory://").unwrap();
        assert_eq!(a.describe(), "memory://");
        assert_eq!(open_store("memory").unwrap().describe(), "memory://");
        assert_eq!(open_store(" MEMORY:// ").unwrap().describe(), "memory://");
        assert!(unavailable("memory://x").contains("memory://"));
    }

    #[cfg(not(feature = "sqlite"))]
    #[test]
    fn sqlite_is_not_built_without_its_feature() {
        let m = unavailable("sqlite:///tmp/flujo.db");
        assert!(m.contains("sqlite://") && m.contains("feature `sqlite`"), "{m}");
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_uris_open_a_sqlite_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state.db");
        let store = open_store(&format!("sqlite:///{}", path.display())).unwrap();
        assert_eq!(store.describe(), format!("sqlite:///{}", path.display()));
        assert!(path.exists());
        assert_eq!(open_store("SQLite://:memory:").unwrap().describe(), "sqlite://:memory:");
        let m = unavailable("sqlite://relative.db");
        assert!(m.contains("sqlite:///relative/path.db"), "{m}");
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn postgres_needs_its_feature() {
        for uri in ["postgres://u:secret@h/db", "postgresql://u:secret@h/db"] {
            let m = unavailable(uri);
            assert!(m.contains("postgres://") && m.contains("feature `postgres`"), "{m}");
            assert!(!m.contains("secret"), "{m}");
        }
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn an_unreachable_postgres_is_named_without_the_password() {
        // Port 1 on the loopback interface: nothing listens there, so the connection is refused at once.
        let m = unavailable("postgres://ann:topsecret@127.0.0.1:1/flows?connect_timeout=5");
        assert!(m.contains("127.0.0.1:1") && m.contains("database flows") && m.contains("user ann"), "{m}");
        assert!(!m.contains("topsecret"), "{m}");
    }

    #[test]
    fn unknown_and_missing_schemes_are_named() {
        let m = unavailable("redis://pw@host");
        assert!(m.contains("redis://") && m.contains("unknown"), "{m}");
        assert!(!m.contains("pw@host"), "{m}");
        assert!(unavailable("/tmp/flujo.db").contains("no scheme"));
        assert!(unavailable("://x").contains("empty scheme"));
    }

    #[test]
    fn mask_hides_only_the_password() {
        assert_eq!(mask_uri("postgres://u:pw@h:1/db?x=1"), "postgres://u:***@h:1/db?x=1");
        assert_eq!(mask_uri("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(mask_uri("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
        assert_eq!(mask_uri("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(mask_uri("postgres://u:pw@h?sslmode=require"), "postgres://u:***@h?sslmode=require");
    }

    #[test]
    fn conflict_helpers_format_like_the_error_type() {
        let e = status_conflict("r1", &[RunStatus::Running, RunStatus::Paused], RunStatus::Completed);
        assert_eq!(e.to_string(), "run 'r1' is completed, expected running or paused");
        assert_eq!(seq_conflict("r1", 3, 5).to_string(), "run 'r1' is appending seq 5, expected next journal seq 3");
    }
}
