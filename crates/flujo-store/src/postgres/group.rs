//! Group commit for Postgres appends: while one append is in flight, the appends of other runs queue up and
//! are written together — one multi-row statement, one transaction, one WAL flush — by a batching task.
//!
//! The batch is the optimistic fast path. A row it does not insert (its `seq` is not the run's next position,
//! the run is not `running` under the fencing owner, another writer took that position) is handed back, and
//! its caller appends it alone with the single-row statement, which says exactly why it is refused (or
//! inserts it, if the refusal was a race that has since settled). A batch whose connection fails leaves the
//! outcome of its rows unknown; each caller then checks its record as after any lost connection.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use crate::codec::RecordRow;

/// The most rows in one batch.
const MAX_BATCH: usize = 512;

/// What became of a row handed to the batcher.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Committed; the bytes it added (row and new blobs).
    Committed(u64),
    /// Not inserted by the batch: append it alone.
    Alone,
    /// The connection failed: whether it committed is unknown.
    Lost,
}

pub(crate) struct Pending {
    pub row: Arc<RecordRow>,
    pub reply: oneshot::Sender<Outcome>,
}

/// The multi-row append: the rows arrive as one array per column; each is inserted only where the single-row
/// statement would insert it (run `running` under the fencing owner, previous record present).
pub(crate) fn batch_sql(s: &str) -> String {
    format!(
        "WITH input AS (SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::int8[], $8::text[], $9::text[], $10::text[], $11::int8[], $12::int8[], $13::int8[], \
         $14::float8[], $15::int8[], $16::float8[], $17::text[], $18::text[], $19::bytea[], $20::int2[], $21::text[], \
         $24::int8[], $25::int8[], $26::int8[]) \
         AS t(run_id, seq, path, step, kind, status, generation, output, output_ref, patch, attempts, \
         prompt_tokens, completion_tokens, cost_usd, started_at_ms, latency_ms, metadata, feedback, hash, \
         hash_scheme, fence_owner, cached_tokens, cache_write_tokens, reasoning_tokens)), \
         nb AS (INSERT INTO {s}.blobs (hash, bytes) SELECT * FROM unnest($22::text[], $23::bytea[]) \
         ON CONFLICT (hash) DO NOTHING RETURNING octet_length(bytes) AS n), \
         ok AS (SELECT t.* FROM input t WHERE EXISTS (SELECT 1 FROM {s}.runs r WHERE r.run_id = t.run_id AND \
         (t.fence_owner IS NULL OR (r.owner_id = t.fence_owner AND r.status = 'running')) FOR SHARE) \
         AND (t.seq = 0 OR EXISTS (SELECT 1 FROM {s}.journal j WHERE j.run_id = t.run_id AND j.seq = t.seq - 1))), \
         ins AS (INSERT INTO {s}.journal (run_id, seq, path, step, kind, status, generation, output, output_ref, \
         patch, attempts, prompt_tokens, completion_tokens, cost_usd, started_at_ms, latency_ms, metadata, \
         feedback, hash, hash_scheme, cached_tokens, cache_write_tokens, reasoning_tokens) SELECT run_id, seq, path, \
         step, kind, status, generation, output, output_ref, patch, attempts, prompt_tokens, completion_tokens, \
         cost_usd, started_at_ms, latency_ms, metadata, feedback, hash, hash_scheme, cached_tokens, \
         cache_write_tokens, reasoning_tokens FROM ok ON CONFLICT (run_id, seq) DO NOTHING RETURNING run_id, seq) \
         SELECT run_id, seq, (SELECT coalesce(sum(n), 0)::int8 FROM nb) FROM ins"
    )
}

/// The batching task: takes the first waiting row, every other waiting row (up to [`MAX_BATCH`]), writes
/// them, replies, and again; rows arriving meanwhile form the next batch. It ends when every sender is gone.
/// (Two such tasks sharing the queue measured no faster on two cores: the server's CPU is the bound.)
pub(crate) async fn batcher(pool: Pool, sql: Arc<String>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        write(&pool, &sql, batch).await;
    }
}

async fn write(pool: &Pool, sql: &str, batch: Vec<Pending>) {
    if batch.len() == 1 {
        // Nothing to group: the single-row path is as fast and says why a row is refused.
        for p in batch {
            let _ = p.reply.send(Outcome::Alone);
        }
        return;
    }
    let conn = match pool.get().await {
        Ok(c) => c,
        Err(_) => {
            for p in batch {
                let _ = p.reply.send(Outcome::Lost);
            }
            return;
        }
    };
    let rows: Vec<&RecordRow> = batch.iter().map(|p| p.row.as_ref()).collect();
    let col = |f: fn(&RecordRow) -> Option<&str>| -> Vec<Option<&str>> { rows.iter().map(|r| f(r)).collect() };
    let int = |f: fn(&RecordRow) -> i64| -> Vec<i64> { rows.iter().map(|r| f(r)).collect() };
    let real = |f: fn(&RecordRow) -> f64| -> Vec<f64> { rows.iter().map(|r| f(r)).collect() };
    let run_id = col(|r| Some(&r.run_id));
    let seq = int(|r| r.seq);
    let path = col(|r| Some(&r.path));
    let step = col(|r| Some(&r.step));
    let kind = col(|r| Some(&r.kind));
    let status = col(|r| Some(r.status));
    let generation = int(|r| r.generation);
    let output = col(|r| r.output.as_deref());
    let output_ref = col(|r| r.output_ref.as_deref());
    let patch = col(|r| Some(&r.patch));
    let attempts = int(|r| r.attempts);
    let prompt = int(|r| r.prompt_tokens);
    let completion = int(|r| r.completion_tokens);
    let cost = real(|r| r.cost_usd);
    let started = int(|r| r.started_at_ms);
    let latency = real(|r| r.latency_ms);
    let metadata = col(|r| r.metadata.as_deref());
    let feedback = col(|r| r.feedback.as_deref());
    let hash: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
    let scheme: Vec<i16> = rows.iter().map(|r| i16::try_from(r.hash_scheme).unwrap_or(i16::MAX)).collect();
    let fence = col(|r| r.fence_owner.as_deref());
    let cached = int(|r| r.cached_tokens);
    let cache_write = int(|r| r.cache_write_tokens);
    let reasoning = int(|r| r.reasoning_tokens);
    let mut blob_hashes: Vec<&str> = Vec::new();
    let mut blob_bytes: Vec<&[u8]> = Vec::new();
    for r in &rows {
        for b in &r.blobs {
            if !blob_hashes.contains(&b.hash.as_str()) {
                blob_hashes.push(&b.hash);
                blob_bytes.push(&*b.bytes);
            }
        }
    }
    let params: [&(dyn ToSql + Sync); 26] = [
        &run_id,
        &seq,
        &path,
        &step,
        &kind,
        &status,
        &generation,
        &output,
        &output_ref,
        &patch,
        &attempts,
        &prompt,
        &completion,
        &cost,
        &started,
        &latency,
        &metadata,
        &feedback,
        &hash,
        &scheme,
        &fence,
        &blob_hashes,
        &blob_bytes,
        &cached,
        &cache_write,
        &reasoning,
    ];
    let result = match conn.prepare_cached(sql).await {
        Ok(st) => conn.query(&st, &params).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(inserted) => {
            let blob_total = inserted.first().map_or(0, |row| row.get::<_, i64>(2).unsigned_abs());
            let done: std::collections::HashSet<(String, i64)> =
                inserted.iter().map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1))).collect();
            let mut first = true;
            for p in batch {
                let key = (p.row.run_id.clone(), p.row.seq);
                let outcome = if done.contains(&key) {
                    let mut bytes = p.row.payload_len();
                    if first {
                        bytes += blob_total;
                        first = false;
                    }
                    Outcome::Committed(bytes)
                } else {
                    Outcome::Alone
                };
                let _ = p.reply.send(outcome);
            }
        }
        // A database error (a blob deleted under the batch by a retention run, …): each row alone.
        Err(e) if e.as_db_error().is_some() => {
            for p in batch {
                let _ = p.reply.send(Outcome::Alone);
            }
        }
        Err(_) => {
            for p in batch {
                let _ = p.reply.send(Outcome::Lost);
            }
        }
    }
}
