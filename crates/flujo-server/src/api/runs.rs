//! `/api/runs…`: start, list, inspect, follow, answer and cancel runs.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flujo_core::{FlujoError, Map, RunFilter, RunRecord, RunStatus, StoreError, Value};
use flujo_engine::{ResumeRequest, RunOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiPath, ApiQuery, AppState};
use crate::error::{ApiError, ErrorBody};
use crate::hub::{is_live, record_event, status_event, HubEvent};

/// `POST /api/runs`: a new run of a pipeline.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The pipeline's name (`GET /api/pipelines`).
    pub pipeline: String,
    /// The run's input (default: the empty string, as `flujo run` without input).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Option<Value>,
    /// The run's initial context fields.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: Option<Map<String, Value>>,
    /// The run's id (default: a new UUID v7).
    #[serde(default)]
    pub run_id: Option<String>,
    /// The queue to put the run on (default: the server's own); runs of queues the server does not serve
    /// wait for `flujo worker --queue NAME`.
    #[serde(default)]
    pub queue: Option<String>,
}

/// The answer to `POST /api/runs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    /// The run's id.
    pub run_id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// `running` (the server's pool started it) or `queued` (it waits for a slot or a worker of its queue).
    pub status: String,
    /// The queue it waits on.
    pub queue: String,
}

/// A run in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// Its pipeline's name.
    pub pipeline: String,
    /// `queued`, `running`, `paused`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// When it was created (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// When its row last changed.
    pub updated_at_ms: i64,
    /// From creation to its last status change, once it is not running or queued.
    pub duration_ms: Option<i64>,
    /// What it has spent, in USD.
    pub total_cost_usd: f64,
    /// Tokens it has used.
    pub total_tokens: u64,
    /// Pending pauses.
    pub pending: usize,
    /// Its queue, if it was queued.
    pub queue: Option<String>,
    /// Why it failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<flujo_core::RunError>,
}

impl RunSummary {
    fn of(run: &RunRecord) -> Self {
        RunSummary {
            run_id: run.run_id.clone(),
            pipeline: run.pipeline_name.clone(),
            status: run.status.as_str().to_owned(),
            created_at_ms: run.created_at_ms,
            updated_at_ms: run.updated_at_ms,
            duration_ms: (!is_live(run.status)).then(|| run.updated_at_ms.saturating_sub(run.created_at_ms)),
            total_cost_usd: run.total_cost_usd,
            total_tokens: run.total_tokens,
            pending: run.pending.len(),
            queue: run.queue.clone(),
            error: run.error.clone(),
        }
    }
}

/// A page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// The runs, newest first.
    pub runs: Vec<RunSummary>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /api/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs of this status.
    status: Option<String>,
    /// Only runs of this pipeline.
    pipeline: Option<String>,
    /// Only runs created at or after this time (ms since the Unix epoch).
    since: Option<i64>,
    /// Page size (default 50).
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `POST /api/runs/{id}/resume`: the answer to a pause.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    /// The pause to answer (may be left out when exactly one is pending).
    #[serde(default)]
    pub pause_id: Option<String>,
    /// The answer; it must satisfy the pause's `input_schema`.
    #[schema(value_type = Object)]
    pub answer: Value,
}

/// The answer to resume and cancel.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunStatusReply {
    /// The run's id.
    pub run_id: String,
    /// Its status after the request.
    pub status: String,
}

fn parse_status(s: &str) -> Result<RunStatus, ApiError> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
        ApiError::bad_request(format!(
            "unknown status {s:?}; one of queued, running, paused, completed, failed, cancelled"
        ))
    })
}

fn cursor_of(run: &RunRecord) -> String {
    format!("{}.{}", run.created_at_ms, run.run_id)
}

fn parse_cursor(c: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request(format!("malformed cursor {c:?}; pass `next_cursor` as it was given"));
    let (at, id) = c.split_once('.').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.to_owned()))
}

async fn run_or_404(state: &AppState, run_id: &str) -> Result<RunRecord, ApiError> {
    state.store.get_run(run_id).await?.ok_or_else(|| ApiError::run_not_found(run_id))
}

fn flujo_error(e: &FlujoError) -> ApiError {
    let kind = e.kind();
    let status = match e {
        FlujoError::Store(StoreError::RunExists(_)) => return ApiError::conflict("run_exists", e.to_string()),
        FlujoError::RunNotFound(_) => StatusCode::NOT_FOUND,
        FlujoError::InvalidRunId { .. } | FlujoError::ContextValidation(_) | FlujoError::Config(_) => {
            StatusCode::BAD_REQUEST
        }
        FlujoError::InvalidResumeInput { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        FlujoError::NotResumable { .. } | FlujoError::PipelineMismatch { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, kind, e.to_string())
}

fn factory_error(e: crate::factory::FactoryError) -> ApiError {
    let status = match e.kind.as_str() {
        "pipeline_not_found" => StatusCode::NOT_FOUND,
        "pipeline_mismatch" => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, &e.kind, e.message)
}

/// Starts a run: stored before the answer, `running` when the server's pool has a free slot, else `queued`
/// for the pool or a worker of its queue.
#[utoipa::path(post, path = "/api/runs", request_body = StartRun, responses(
    (status = 202, body = RunAccepted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn start_run(State(state): State<AppState>, ApiJson(body): ApiJson<StartRun>) -> Result<Response, ApiError> {
    let flujo = crate::factory::runner_off_thread(&state.factory, &body.pipeline).await.map_err(factory_error)?;
    let queue = match body.queue {
        Some(q) => q,
        None => state.pool.config().queues.first().cloned().unwrap_or_else(|| "default".to_owned()),
    };
    let mut opts = RunOptions::new(body.input.unwrap_or_else(|| Value::String(String::new())));
    if let Some(ctx) = body.context {
        opts = opts.context(ctx);
    }
    if let Some(id) = body.run_id {
        opts = opts.run_id(id);
    }
    // A run of the pool's own queue starts at once when a slot is free (stored `running` under this server,
    // still of its queue should the server die); otherwise it waits in the queue.
    if state.pool.serves(&queue) && state.pool.try_reserve() {
        let run_id = state.pool.start_reserved(flujo, opts.queue(queue.clone())).await.map_err(|e| flujo_error(&e))?;
        let accepted = RunAccepted { run_id, pipeline: body.pipeline, status: "running".to_owned(), queue };
        return Ok((StatusCode::ACCEPTED, Json(accepted)).into_response());
    }
    let run_id = flujo.enqueue(opts, &queue).await.map_err(|e| flujo_error(&e))?;
    if state.pool.serves(&queue) {
        state.pool.wake();
    }
    let accepted = RunAccepted { run_id, pipeline: body.pipeline, status: "queued".to_owned(), queue };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// Lists runs, newest first, a page at a time.
#[utoipa::path(get, path = "/api/runs", params(ListQuery), responses(
    (status = 200, body = RunList), (status = 400, body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<RunList>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, state.limits.max_page);
    let mut filter = RunFilter::new().limit(limit + 1);
    if let Some(s) = q.status.as_deref().filter(|s| !s.is_empty()) {
        filter = filter.status(parse_status(s)?);
    }
    if let Some(p) = q.pipeline.filter(|p| !p.is_empty()) {
        filter = filter.pipeline(p);
    }
    if let Some(since) = q.since {
        filter = filter.since_ms(since);
    }
    if let Some(c) = q.cursor.as_deref().filter(|c| !c.is_empty()) {
        let (at, id) = parse_cursor(c)?;
        filter = filter.before(at, id);
    }
    let mut runs = state.store.list_runs(&filter).await?;
    let next_cursor = if runs.len() > limit {
        runs.truncate(limit);
        runs.last().map(cursor_of)
    } else {
        None
    };
    Ok(Json(RunList { runs: runs.iter().map(RunSummary::of).collect(), next_cursor }))
}

/// One run: the object `flujo run --json` prints, plus its input, times, queue and journal length.
#[utoipa::path(get, path = "/api/runs/{id}", params(("id" = String, Path, description = "run id")), responses(
    (status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_run(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Json<Value>, ApiError> {
    let run = run_or_404(&state, &id).await?;
    let records = state.store.load_journal(&id).await?;
    let result = flujo_engine::client::stored_result(&run, &records);
    let mut v = serde_json::to_value(&result).map_err(|e| ApiError::internal("internal_error", e.to_string()))?;
    if let Value::Object(m) = &mut v {
        // The input and initial context are stored as given (replay needs them); what leaves the server
        // goes through the redaction of the journal and `flujo lens` (values under secret-named keys).
        m.insert("input".into(), flujo_core::redact::redact(&run.input));
        if let Some(ctx) = m.get_mut("context") {
            *ctx = flujo_core::redact::redact(ctx);
        }
        m.insert("created_at_ms".into(), json!(run.created_at_ms));
        m.insert("updated_at_ms".into(), json!(run.updated_at_ms));
        m.insert("queue".into(), json!(run.queue));
        m.insert("generation".into(), json!(run.generation));
        m.insert("journal_len".into(), json!(records.len()));
    }
    Ok(Json(v))
}

/// Every journal record of a run (nested step executions included), in order.
#[utoipa::path(get, path = "/api/runs/{id}/journal", params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_journal(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Json<Value>, ApiError> {
    run_or_404(&state, &id).await?;
    let records = state.store.load_journal(&id).await?;
    Ok(Json(json!({"run_id": id, "records": records})))
}

/// The hash-chain check of a run (`flujo lens verify`).
#[utoipa::path(get, path = "/api/runs/{id}/verify", params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn verify_run(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Json<Value>, ApiError> {
    let report = state.client.verify(&id).await?;
    let broken = report.broken.as_ref().map(|b| json!({"seq": b.seq, "path": b.path, "reason": b.reason}));
    Ok(Json(json!({"run_id": report.run_id, "ok": report.is_ok(), "records": report.records,
        "last_hash": report.last_hash, "broken": broken})))
}

/// Where an event stream starts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Send the journal records after this position first (default: only what happens from now on).
    after_seq: Option<u64>,
    /// The bearer token, for clients that cannot send headers (browsers' EventSource).
    #[allow(dead_code)]
    token: Option<String>,
}

/// The kinds of event of a run's stream.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // documentation only, as `StreamEvent`
pub enum StreamEventKind {
    /// How the run stands: `{status, pending, error, total_cost_usd, total_tokens}`.
    Status,
    /// A step began: `{path, step, kind}`.
    StepStarted,
    /// A step's journal record: `{path, step, kind, status, attempts, latency_ms, tokens, cost_usd}`.
    StepFinished,
    /// The run is neither running nor queued any more (the stream closes): `{status}`.
    End,
}

/// One server-sent event of `GET /api/runs/{id}/events`, as OpenAPI 3.1 describes an event stream: the
/// schema of each event. (Documentation only: the stream is written with axum's `Event`.)
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamEvent {
    /// Which event.
    pub event: StreamEventKind,
    /// The event's JSON object, as text.
    #[schema(content_media_type = "application/json")]
    pub data: String,
    /// The journal record's seq, on `step_finished` (send it back as `Last-Event-ID` to resume).
    pub id: Option<String>,
}

/// Decrements the open-stream count when a stream ends.
struct StreamSlot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn sse_event(e: &HubEvent) -> Event {
    let ev = Event::default().event(e.event).data(e.data.to_string());
    match e.seq {
        Some(seq) => ev.id(seq.to_string()),
        None => ev,
    }
}

/// Live events of a run as server-sent events: `status` first, then `step_started`, `step_finished` (id:
/// the record's seq) and `status` as they happen, and `end` once the run is neither running nor queued.
/// Works for runs walked by any process on the same store. `Last-Event-ID` or `after_seq` replays the
/// records after that position first.
#[utoipa::path(get, path = "/api/runs/{id}/events", params(("id" = String, Path, description = "run id"), EventsQuery),
    responses((status = 200, content_type = "text/event-stream", body = StreamEvent), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 503, body = ErrorBody)))]
pub async fn run_events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = run_or_404(&state, &id).await?;
    let last_event: Option<u64> =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let after = last_event.or(q.after_seq);
    if state.sse_open.fetch_add(1, Ordering::Relaxed) >= state.limits.max_sse {
        state.sse_open.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("{} event streams are open; try again later", state.limits.max_sse),
        ));
    }
    let slot = StreamSlot(state.sse_open.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    let (store, hub) = (state.store.clone(), state.hub.clone());
    tokio::spawn(async move {
        let _slot = slot;
        // Records up to `sent` are known to the client (`None`: none yet).
        let mut sent: Option<u64> = after;
        let catch_up = |records: &[flujo_core::JournalRecord], sent: &mut Option<u64>| -> Vec<Event> {
            let mut out = Vec::new();
            let from = sent.map_or(0, |s| s + 1);
            for r in records.iter().filter(|r| r.seq >= from) {
                out.push(sse_event(&record_event(r)));
                *sent = Some(r.seq);
            }
            out
        };
        if tx.send(sse_event(&status_event(&run))).await.is_err() {
            return;
        }
        if !is_live(run.status) {
            if let Some(after) = after {
                if let Ok(records) = store.load_journal_from(&run.run_id, after + 1).await {
                    for e in catch_up(&records, &mut sent) {
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(sse_event(&end_event(run.status))).await;
            return;
        }
        // Where the client stands: the records after `after`, or (without it) the journal as it is now.
        let snapshot = match after {
            Some(a) => store.load_journal_from(&run.run_id, a + 1).await,
            None => store.load_journal(&run.run_id).await,
        };
        let Ok(snapshot) = snapshot else { return };
        match after {
            Some(_) => {
                for e in catch_up(&snapshot, &mut sent) {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
            }
            None => sent = snapshot.last().map(|r| r.seq),
        }
        // Then subscribe (a new watcher starts after what the client has), and read once more: records
        // committed between the snapshot and the subscription, which an existing watcher had already sent,
        // are not lost; what the watcher sends again is skipped by its seq.
        let mut sub = hub.subscribe(&run.run_id, sent);
        let Ok(gap) = store.load_journal_from(&run.run_id, sent.map_or(0, |s| s + 1)).await else { return };
        for e in catch_up(&gap, &mut sent) {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        loop {
            let ev = tokio::select! {
                ev = sub.rx.recv() => ev,
                _ = tx.closed() => return,
            };
            match ev {
                Ok(e) => {
                    if let Some(seq) = e.seq {
                        if sent.is_some_and(|s| seq <= s) {
                            continue;
                        }
                        sent = Some(seq);
                    }
                    let end = e.event == "end";
                    if tx.send(sse_event(&e)).await.is_err() || end {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow to follow: catch up from the store.
                    let from = sent.map_or(0, |s| s + 1);
                    let Ok(records) = store.load_journal_from(&run.run_id, from).await else { return };
                    for e in catch_up(&records, &mut sent) {
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    // The watcher stopped (store errors): say how the run stands and end.
                    if let Ok(Some(now)) = store.get_run(&run.run_id).await {
                        let _ = tx.send(sse_event(&status_event(&now))).await;
                        let _ = tx.send(sse_event(&end_event(now.status))).await;
                    }
                    return;
                }
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<Event, Infallible>(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

fn end_event(status: RunStatus) -> HubEvent {
    HubEvent { event: "end", data: json!({"status": status}), seq: None }
}

/// Answers a pending pause; the run goes on in the server's pool (or its queue's workers).
#[utoipa::path(post, path = "/api/runs/{id}/resume", params(("id" = String, Path, description = "run id")),
    request_body = ResumeBody, responses((status = 202, body = RunStatusReply), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
    (status = 422, body = ErrorBody)))]
pub async fn resume_run(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ResumeBody>,
) -> Result<Response, ApiError> {
    let run = run_or_404(&state, &id).await?;
    if run.status != RunStatus::Paused {
        if let Some(p) = &body.pause_id {
            if answered(&state, &id, p).await? {
                return Err(ApiError::conflict(
                    "already_answered",
                    format!("pause '{p}' of run '{id}' was already answered"),
                ));
            }
        }
        return Err(ApiError::conflict(
            "not_paused",
            format!("run '{id}' is {}; there is no pause to answer", run.status.as_str()),
        ));
    }
    let pending = match &body.pause_id {
        Some(p) => match run.pending.iter().find(|x| &x.pause_id == p) {
            Some(x) => x,
            None if answered(&state, &id, p).await? => {
                return Err(ApiError::conflict(
                    "already_answered",
                    format!("pause '{p}' of run '{id}' was already answered"),
                ))
            }
            None => {
                return Err(ApiError::conflict(
                    "unknown_pause",
                    format!(
                        "run '{id}' has no pending pause '{p}' (pending: {})",
                        run.pending.iter().map(|x| x.pause_id.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
        },
        None if run.pending.len() == 1 => &run.pending[0],
        None => {
            return Err(ApiError::bad_request(format!(
                "run '{id}' has {} pending pauses ({}); say which one with `pause_id`",
                run.pending.len(),
                run.pending.iter().map(|x| x.pause_id.as_str()).collect::<Vec<_>>().join(", ")
            )))
        }
    };
    if let Some(schema) = &pending.input_schema {
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| ApiError::internal("invalid_schema", format!("the pause's input_schema is invalid: {e}")))?;
        let errors: Vec<String> = validator
            .iter_errors(&body.answer)
            .map(|e| {
                let at = e.instance_path.to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{e} (at '{at}')")
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_answer", errors.join("; ")));
        }
    }
    let req = ResumeRequest::answer(body.answer).pause_id(pending.pause_id.clone());
    if run.queue.is_some() {
        // Recorded on the pause and put back on the queue; a worker (this pool or another) continues it.
        let queue = run.queue.clone().unwrap_or_default();
        let flujo = crate::factory::runner_for_off_thread(&state.factory, &run).await.map_err(factory_error)?;
        let result = flujo.resume_with(&id, req).await.map_err(|e| answer_error(&e))?;
        if state.pool.serves(&queue) {
            state.pool.wake();
        }
        let reply = RunStatusReply { run_id: id, status: result.status.as_str().to_owned() };
        return Ok((StatusCode::ACCEPTED, Json(reply)).into_response());
    }
    state.pool.spawn_resume(run, req).await.map_err(|e| answer_error(&e))?;
    let status = state.store.get_run(&id).await?.map_or("running", |r| r.status.as_str()).to_owned();
    Ok((StatusCode::ACCEPTED, Json(RunStatusReply { run_id: id, status })).into_response())
}

/// True when the journal of `run_id` holds the answer of the pause `pause_id` (a finished `hitl` record).
async fn answered(state: &AppState, run_id: &str, pause_id: &str) -> Result<bool, ApiError> {
    let records = state.store.load_journal(run_id).await?;
    Ok(records.iter().any(|r| r.path == pause_id && r.kind == "hitl"))
}

/// A concurrent answer won the race: the pause is no longer pending.
fn answer_error(e: &FlujoError) -> ApiError {
    match e {
        FlujoError::NotResumable { .. } => ApiError::conflict("already_answered", e.to_string()),
        other => flujo_error(other),
    }
}

/// Cancels a run (final: it can never be resumed). A walk in any process stops at its next commit.
#[utoipa::path(post, path = "/api/runs/{id}/cancel", params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = RunStatusReply), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub async fn cancel_run(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RunStatusReply>, ApiError> {
    let view = state.client.cancel(&id, "cancelled through the API").await?;
    state.pool.abort(&id);
    state.metrics.run_cancelled(&view.pipeline_name);
    Ok(Json(RunStatusReply { run_id: view.run_id, status: view.status.as_str().to_owned() }))
}
