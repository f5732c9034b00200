//! The Postgres schema and its migrations.
//!
//! Flujo's tables live in one Postgres schema (`public` unless the URI says `schema=NAME`), with the version
//! in the one-row table `flujo_schema`. [`MIGRATIONS`]`[i]` takes the tables from version `i` to `i + 1`; all
//! pending migrations run in one transaction under a transaction-level advisory lock keyed by the schema name,
//! so two processes opening a new database at once serialize (the second finds nothing left to do). Tables
//! newer than [`SCHEMA_VERSION`] are refused rather than misread, and so is a schema that holds a `runs`
//! table Flujo did not make.
//!
//! The columns mirror the SQLite store's (`crate::codec` encodes rows for both): JSON is kept as `TEXT`,
//! never `jsonb`, because the journal hash covers the exact bytes and `jsonb` reorders keys. `run_id` uses the
//! `C` collation, so ordering and prefix ranges are byte order, as in every backend.

use tokio_postgres::Client;

use flujo_core::StoreError;

use super::{pg_error, Sql};

/// The schema version this build of flujo-store reads and writes.
pub const SCHEMA_VERSION: i32 = 7;

/// `MIGRATIONS[i]` upgrades version `i` to `i + 1`; `{s}` stands for the quoted schema name.
const MIGRATIONS: &[&str] =
    &[MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4, MIGRATION_5, MIGRATION_6, MIGRATION_7];

/// Version 7: a compact journal, as in the SQLite store (its version 10): `prev_hash` is gone (it is the
/// previous record's `hash`, which each hash covers), `hash` is its 32 bytes instead of 64 hex digits, and
/// `hash_scheme` says how it was computed (records written before are scheme 1 and still verify). A hash that
/// is not 64 lowercase hex digits (a damaged journal) is kept as its bytes, so verification still reports it.
const MIGRATION_7: &str = r#"
ALTER TABLE {s}.journal DROP COLUMN prev_hash;
ALTER TABLE {s}.journal ALTER COLUMN hash TYPE BYTEA USING
    (CASE WHEN hash ~ '^[0-9a-f]{64}$' THEN decode(hash, 'hex') ELSE convert_to(hash, 'UTF8') END);
ALTER TABLE {s}.journal ADD COLUMN hash_scheme SMALLINT NOT NULL DEFAULT 1;
ALTER TABLE {s}.journal ALTER COLUMN hash_scheme DROP DEFAULT;
"#;

/// Version 6: a journal record's usage details (`flujo_core::TokenUsage`'s `cached`, `cache_write`,
/// `reasoning`), as in the SQLite store. Records written before have none: 0, which is what their hash
/// covered (zero details are not part of a record's canonical bytes).
const MIGRATION_6: &str = r#"
ALTER TABLE {s}.journal
    ADD COLUMN cached_tokens      BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reasoning_tokens   BIGINT NOT NULL DEFAULT 0;
"#;

/// Version 5: shadow evaluations, as in the SQLite store: the columns claims and filters read, and the whole
/// record as JSON (`record`).
const MIGRATION_5: &str = r#"
CREATE TABLE {s}.evaluations (
    evaluation_id       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    run_id              TEXT    NOT NULL,
    pipeline            TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    lease_expires_at_ms BIGINT,
    created_at_ms       BIGINT  NOT NULL,
    record              TEXT    NOT NULL
);
CREATE INDEX evaluations_run ON {s}.evaluations (run_id);
CREATE INDEX evaluations_status ON {s}.evaluations (status, created_at_ms);
CREATE INDEX evaluations_pipeline ON {s}.evaluations (pipeline, created_at_ms);
"#;

/// Version 4: claims find runs whose lease expired by their own index, not by scanning live running runs;
/// a run that becomes `queued` notifies the channel `flujo_queued` (payload `SCHEMA/QUEUE`, sent at commit)
/// so idle workers claim it at once (`LISTEN`, see `listen.rs`).
const MIGRATION_4: &str = r#"
CREATE INDEX runs_queue_lease ON {s}.runs (queue, status, lease_expires_at_ms) WHERE queue IS NOT NULL;
CREATE FUNCTION {s}.flujo_notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flujo_queued', TG_TABLE_SCHEMA || '/' || NEW.queue);
    RETURN NULL;
END
$$;
CREATE TRIGGER runs_notify_queued AFTER INSERT OR UPDATE OF status ON {s}.runs
    FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.queue IS NOT NULL)
    EXECUTE FUNCTION {s}.flujo_notify_queued();
"#;

/// Version 3: when a worker last claimed a run (queue rate limits).
const MIGRATION_3: &str = r#"
ALTER TABLE {s}.runs ADD COLUMN claimed_at_ms BIGINT;
"#;

/// Version 2: queues — the queue a run waits on for a worker (`flujo run --queue`), and the index claims use.
const MIGRATION_2: &str = r#"
ALTER TABLE {s}.runs ADD COLUMN queue TEXT;
CREATE INDEX runs_queue ON {s}.runs (queue, status, created_at_ms) WHERE queue IS NOT NULL;
"#;

/// Version 1: runs (with ownership, origin and journal head), journal, blobs, system state.
const MIGRATION_1: &str = r#"
CREATE TABLE {s}.runs (
    run_id             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    pipeline_name      TEXT             NOT NULL,
    pipeline_version   TEXT             NOT NULL,
    pipeline_hash      TEXT             NOT NULL,
    definition         TEXT,
    status             TEXT             NOT NULL,
    input              TEXT             NOT NULL,
    initial_context    TEXT             NOT NULL,
    pending            TEXT             NOT NULL,
    output             TEXT,
    error              TEXT,
    generation         BIGINT           NOT NULL,
    total_cost_usd     DOUBLE PRECISION NOT NULL,
    total_tokens       BIGINT           NOT NULL,
    created_at_ms      BIGINT           NOT NULL,
    updated_at_ms      BIGINT           NOT NULL,
    owner_id           TEXT,
    owner              TEXT,
    lease_expires_at_ms BIGINT,
    origin             TEXT,
    journal_head       TEXT
);
CREATE INDEX runs_status ON {s}.runs (status);
CREATE INDEX runs_pipeline_name ON {s}.runs (pipeline_name);
CREATE INDEX runs_created_at_ms ON {s}.runs (created_at_ms DESC, run_id DESC);

CREATE TABLE {s}.blobs (
    hash  TEXT  NOT NULL PRIMARY KEY,
    bytes BYTEA NOT NULL
);

CREATE TABLE {s}.journal (
    run_id            TEXT COLLATE "C" NOT NULL REFERENCES {s}.runs (run_id) ON DELETE CASCADE,
    seq               BIGINT           NOT NULL,
    path              TEXT             NOT NULL,
    step              TEXT             NOT NULL,
    kind              TEXT             NOT NULL,
    status            TEXT             NOT NULL,
    generation        BIGINT           NOT NULL,
    output            TEXT,
    output_ref        TEXT             REFERENCES {s}.blobs (hash),
    patch             TEXT             NOT NULL,
    attempts          BIGINT           NOT NULL,
    prompt_tokens     BIGINT           NOT NULL,
    completion_tokens BIGINT           NOT NULL,
    cost_usd          DOUBLE PRECISION NOT NULL,
    started_at_ms     BIGINT           NOT NULL,
    latency_ms        DOUBLE PRECISION NOT NULL,
    metadata          TEXT,
    feedback          TEXT,
    prev_hash         TEXT             NOT NULL,
    hash              TEXT             NOT NULL,
    PRIMARY KEY (run_id, seq),
    CHECK ((output IS NULL) <> (output_ref IS NULL))
);
CREATE INDEX journal_output_ref ON {s}.journal (output_ref) WHERE output_ref IS NOT NULL;

CREATE TABLE {s}.system_state (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// Brings the schema to [`SCHEMA_VERSION`], or refuses tables it cannot read.
pub(crate) async fn migrate(client: &mut Client, sql: &Sql, schema: &str) -> Result<(), StoreError> {
    let s = &sql.schema;
    let tx = client.transaction().await.map_err(|e| pg_error("cannot begin the migration", e))?;
    // Serializes concurrent openers of one schema; released at commit or rollback.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('flujo-schema:' || $1))", &[&schema])
        .await
        .map_err(|e| pg_error("cannot lock the schema for migration", e))?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
        .await
        .map_err(|e| pg_error(&format!("cannot create schema {schema}"), e))?;
    let has = |table: &'static str| {
        let tx = &tx;
        async move {
            tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{s}.{table}")])
                .await
                .map(|row| row.get::<_, bool>(0))
                .map_err(|e| pg_error("cannot read the schema", e))
        }
    };
    let version: i32 = if has("flujo_schema").await? {
        let row = tx
            .query_opt(&format!("SELECT version FROM {s}.flujo_schema"), &[])
            .await
            .map_err(|e| pg_error("cannot read the schema version", e))?;
        row.map(|r| r.get(0)).unwrap_or(0)
    } else {
        if has("runs").await? {
            return Err(StoreError::Unavailable(format!(
                "schema {schema} has a `runs` table that Flujo did not make; use another schema (`?schema=NAME`)"
            )));
        }
        tx.batch_execute(&format!(
            "CREATE TABLE {s}.flujo_schema (version INTEGER NOT NULL); INSERT INTO {s}.flujo_schema VALUES (0)"
        ))
        .await
        .map_err(|e| pg_error("cannot create the schema version table", e))?;
        0
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "schema {schema} is at version {version}, newer than this Flujo reads ({SCHEMA_VERSION}); upgrade Flujo"
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        tx.batch_execute(&migration.replace("{s}", s))
            .await
            .map_err(|e| pg_error(&format!("migration to schema version {} failed", i + 1), e))?;
    }
    if version < SCHEMA_VERSION {
        tx.execute(&format!("UPDATE {s}.flujo_schema SET version = $1"), &[&SCHEMA_VERSION])
            .await
            .map_err(|e| pg_error("cannot record the schema version", e))?;
    }
    tx.commit().await.map_err(|e| pg_error("cannot commit the migration", e))
}
