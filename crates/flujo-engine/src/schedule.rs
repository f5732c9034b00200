//! Scheduled runs: a cron expression, a time zone and the queued run each tick enqueues, kept in the shared
//! store so that any number of workers fire each tick exactly once.
//!
//! A [`Schedule`] is made by [`crate::Flujo::new_schedule`] (the same checks as a queued run: input,
//! context, the stored definition and skills) and saved with [`insert`] or [`replace`] under the system
//! state key `schedule/NAME`. Workers call [`fire_due`] every poll: for each schedule of their queues it
//! enqueues one run per tick that has passed since the last tick fired (the key `schedule_tick/NAME`).
//!
//! **Exactly once per tick, without a coordinator.** The run of a tick has a deterministic id,
//! `sched-NAME-YYYYMMDDTHHMMSSZ` (the tick in UTC): two workers firing the same tick both call
//! `create_run` with that id and the store lets exactly one of them create it (`RunExists` for the other,
//! which counts it as fired by someone else). The last-fired tick only saves work; it is advanced after the
//! runs exist, so a worker that dies between the two leaves nothing lost (the next worker re-tries the tick
//! and meets `RunExists`).
//!
//! **Missed ticks.** Ticks missed while no worker ran are fired late when they are less than the schedule's
//! catch-up window old (default 60 s); older ones are skipped and counted in [`FireReport::skipped`]. At most
//! [`MAX_TICKS_PER_PASS`] ticks of one schedule are enqueued per call.

use croner::parser::{CronParser, Seconds};
use croner::Cron;
use flujo_core::{RunRecord, RunStatus, Store, StoreError};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The system-state key prefix of schedules.
pub const SCHEDULE_PREFIX: &str = "schedule/";
/// The system-state key prefix of each schedule's last fired tick.
const TICK_PREFIX: &str = "schedule_tick/";
/// Most ticks of one schedule enqueued by one [`fire_due`] call.
pub const MAX_TICKS_PER_PASS: usize = 1000;
/// The default catch-up window: a tick missed by longer than this is skipped.
pub const DEFAULT_CATCHUP_MS: i64 = 60_000;

/// A named cron schedule and the run each tick enqueues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Schedule {
    /// The schedule's name (part of its runs' ids).
    pub name: String,
    /// The cron expression: five fields (minute granularity), six (with seconds first), or an alias
    /// (`@hourly`, `@daily`, …).
    pub cron: String,
    /// The IANA time zone the expression is read in (`UTC`, `Europe/Madrid`, …).
    pub timezone: String,
    /// The queue the runs are put on.
    pub queue: String,
    /// When the schedule was saved (Unix ms); no tick before it fires.
    pub created_at_ms: i64,
    /// A tick missed by longer than this (no worker was running) is skipped instead of fired late.
    pub catchup_ms: i64,
    /// The run of every tick: status `queued`, the pipeline's definition, input and context; its id and times
    /// are set per tick.
    pub template: RunRecord,
}

/// A cron expression parsed the way schedules read them (seconds optional, aliases allowed); the error says
/// what is wrong with it.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let parser = CronParser::builder().seconds(Seconds::Optional).build();
    parser.parse(expr.trim()).map_err(|e| format!("cron expression {expr:?}: {e}"))
}

/// The time zone named `name` (an IANA name such as `Europe/Madrid`, or `UTC`), from the system's zone
/// database.
pub fn parse_timezone(name: &str) -> Result<TimeZone, String> {
    if name.eq_ignore_ascii_case("utc") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|e| format!("time zone {name:?}: {e}"))
}

impl Schedule {
    /// A schedule of `template` (a queued run of `queue`); checks the name, the expression and the zone.
    pub fn new(
        name: &str,
        cron: &str,
        timezone: &str,
        queue: &str,
        template: RunRecord,
        created_at_ms: i64,
    ) -> Result<Self, String> {
        flujo_core::limits::check_name(name).map_err(|reason| format!("schedule name {name:?} {reason}"))?;
        flujo_core::check_run_id(&run_id_for(name, 0))
            .map_err(|reason| format!("schedule name {name:?} makes run ids that are not valid: {reason}"))?;
        flujo_core::limits::check_name(queue).map_err(|reason| format!("queue name {queue:?} {reason}"))?;
        let parsed = parse_cron(cron)?;
        let zone = parse_timezone(timezone)?;
        // An expression that never matches (`0 0 30 2 *`) is refused now rather than silently never firing.
        let start = Zoned::new(Timestamp::from_millisecond(created_at_ms).unwrap_or(Timestamp::UNIX_EPOCH), zone);
        parsed.find_next_occurrence(&start, false).map_err(|e| format!("cron expression {cron:?} never fires: {e}"))?;
        let mut template = template;
        template.status = RunStatus::Queued;
        template.queue = Some(queue.to_owned());
        Ok(Self {
            name: name.to_owned(),
            cron: cron.trim().to_owned(),
            timezone: timezone.to_owned(),
            queue: queue.to_owned(),
            created_at_ms,
            catchup_ms: DEFAULT_CATCHUP_MS,
            template,
        })
    }

    /// The same schedule with another catch-up window (milliseconds, at least 0).
    pub fn with_catchup_ms(mut self, ms: i64) -> Self {
        self.catchup_ms = ms.max(0);
        self
    }

    /// The ticks after `after_ms` up to and including `until_ms` (Unix ms), at most `max`.
    pub fn ticks(&self, after_ms: i64, until_ms: i64, max: usize) -> Result<Vec<i64>, String> {
        let cron = parse_cron(&self.cron)?;
        let zone = parse_timezone(&self.timezone)?;
        let Ok(start) = Timestamp::from_millisecond(after_ms) else {
            return Err(format!("time {after_ms} ms is out of range"));
        };
        let mut out = Vec::new();
        for tick in cron.iter_after(Zoned::new(start, zone)) {
            let ms = tick.timestamp().as_millisecond();
            if ms > until_ms || out.len() >= max {
                break;
            }
            out.push(ms);
        }
        Ok(out)
    }

    /// The next tick after `after_ms`, if the expression has one.
    pub fn next_tick(&self, after_ms: i64) -> Option<i64> {
        self.ticks(after_ms, i64::MAX, 1).ok().and_then(|t| t.first().copied())
    }

    /// The run of the tick at `tick_ms`, created at `now_ms`.
    pub fn run_for_tick(&self, tick_ms: i64, now_ms: i64) -> RunRecord {
        let mut run = self.template.clone();
        run.run_id = run_id_for(&self.name, tick_ms);
        run.created_at_ms = now_ms;
        run.updated_at_ms = now_ms;
        run
    }
}

/// The id of the run schedule `name` enqueues for the tick at `tick_ms`: `sched-NAME-YYYYMMDDTHHMMSSZ`.
pub fn run_id_for(name: &str, tick_ms: i64) -> String {
    let ts = Timestamp::from_millisecond(tick_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    format!("sched-{name}-{}", ts.strftime("%Y%m%dT%H%M%SZ"))
}

fn key(name: &str) -> String {
    format!("{SCHEDULE_PREFIX}{name}")
}

fn tick_key(name: &str) -> String {
    format!("{TICK_PREFIX}{name}")
}

fn encode(s: &Schedule) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(s).map_err(|e| StoreError::Unavailable(format!("cannot serialize schedule '{}': {e}", s.name)))
}

/// Saves `schedule` unless one of that name exists (then `Ok(false)` and nothing is written).
pub async fn insert(store: &dyn Store, schedule: &Schedule) -> Result<bool, StoreError> {
    if store.get_state(&key(&schedule.name)).await?.is_some() {
        return Ok(false);
    }
    replace(store, schedule).await.map(|()| true)
}

/// Saves `schedule`, replacing any of that name; its ticks count from its `created_at_ms`.
pub async fn replace(store: &dyn Store, schedule: &Schedule) -> Result<(), StoreError> {
    store.set_state(&key(&schedule.name), &encode(schedule)?).await?;
    store.set_state(&tick_key(&schedule.name), &json!({"tick_ms": schedule.created_at_ms})).await
}

/// Removes the schedule `name`; true when it existed. Runs it already enqueued stay queued.
pub async fn remove(store: &dyn Store, name: &str) -> Result<bool, StoreError> {
    let existed = store.delete_state(&key(name)).await?;
    store.delete_state(&tick_key(name)).await?;
    Ok(existed)
}

/// One stored schedule: read, or the reason it cannot be read.
#[derive(Debug, Clone)]
pub struct StoredSchedule {
    /// The schedule's name (from its key).
    pub name: String,
    /// The schedule, or why its stored value is not one.
    pub schedule: Result<Schedule, String>,
    /// The last tick fired (Unix ms), if any.
    pub last_tick_ms: Option<i64>,
}

/// Every stored schedule, by name.
pub async fn list(store: &dyn Store) -> Result<Vec<StoredSchedule>, StoreError> {
    let ticks: std::collections::HashMap<String, i64> = store
        .list_state(TICK_PREFIX)
        .await?
        .into_iter()
        .filter_map(|(k, v)| Some((k[TICK_PREFIX.len()..].to_owned(), v.get("tick_ms")?.as_i64()?)))
        .collect();
    Ok(store
        .list_state(SCHEDULE_PREFIX)
        .await?
        .into_iter()
        .map(|(k, v)| {
            let name = k[SCHEDULE_PREFIX.len()..].to_owned();
            let schedule = serde_json::from_value::<Schedule>(v).map_err(|e| format!("not a schedule: {e}"));
            let last_tick_ms = ticks.get(&name).copied();
            StoredSchedule { name, schedule, last_tick_ms }
        })
        .collect())
}

/// What one [`fire_due`] call did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct FireReport {
    /// `(schedule, run id)` of every run this call enqueued.
    pub fired: Vec<(String, String)>,
    /// Ticks whose run another worker had already enqueued.
    pub already_fired: u64,
    /// Ticks skipped: missed by longer than the schedule's catch-up window.
    pub skipped: u64,
    /// Schedules that could not be fired, with the reason.
    pub errors: Vec<(String, String)>,
}

/// Enqueues the runs of every tick that is due at `now_ms` for the schedules of `queues` (all schedules when
/// `queues` is `None`). Safe to call from any number of workers at once: each tick's run is created once.
pub async fn fire_due(store: &dyn Store, queues: Option<&[String]>, now_ms: i64) -> Result<FireReport, StoreError> {
    let mut report = FireReport::default();
    for stored in list(store).await? {
        let schedule = match stored.schedule {
            Ok(s) => s,
            Err(reason) => {
                report.errors.push((stored.name, reason));
                continue;
            }
        };
        if queues.is_some_and(|qs| !qs.contains(&schedule.queue)) {
            continue;
        }
        let last = stored.last_tick_ms.unwrap_or(schedule.created_at_ms).max(schedule.created_at_ms);
        if last >= now_ms {
            continue;
        }
        let window_start = now_ms.saturating_sub(schedule.catchup_ms);
        let from = if last < window_start {
            // Ticks in (last, window_start] are too old to fire.
            match schedule.ticks(last, window_start, MAX_TICKS_PER_PASS) {
                Ok(old) => report.skipped += old.len() as u64,
                Err(reason) => {
                    report.errors.push((schedule.name.clone(), reason));
                    continue;
                }
            }
            window_start
        } else {
            last
        };
        let ticks = match schedule.ticks(from, now_ms, MAX_TICKS_PER_PASS) {
            Ok(t) => t,
            Err(reason) => {
                report.errors.push((schedule.name.clone(), reason));
                continue;
            }
        };
        for &tick in &ticks {
            let run = schedule.run_for_tick(tick, now_ms);
            match store.create_run(&run).await {
                Ok(()) => report.fired.push((schedule.name.clone(), run.run_id)),
                Err(StoreError::RunExists(_)) => report.already_fired += 1,
                Err(e) => return Err(e),
            }
        }
        // Advance the last tick (never backwards: another worker may have gone further meanwhile).
        let newest = ticks.last().copied().unwrap_or(from).max(from);
        let stored_now = store.get_state(&tick_key(&schedule.name)).await?;
        let current = stored_now.as_ref().and_then(|v| v.get("tick_ms")).and_then(serde_json::Value::as_i64);
        if current.is_none_or(|c| c < newest) && store.get_state(&key(&schedule.name)).await?.is_some() {
            store.set_state(&tick_key(&schedule.name), &json!({"tick_ms": newest})).await?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> RunRecord {
        serde_json::from_value(json!({
            "run_id": "template", "pipeline_name": "p", "pipeline_version": "1", "pipeline_hash": "h",
            "definition": null, "status": "queued", "input": "hi", "initial_context": {}, "pending": [],
            "output": null, "error": null, "generation": 0, "total_cost_usd": 0.0, "total_tokens": 0,
            "created_at_ms": 0, "updated_at_ms": 0, "owner": null, "lease_expires_at_ms": null, "origin": null,
            "journal_head": null, "queue": null
        }))
        .unwrap_or_else(|e| panic!("template: {e}"))
    }

    #[test]
    fn run_ids_name_the_tick_in_utc() {
        assert_eq!(run_id_for("nightly", 1_765_000_000_000), "sched-nightly-20251206T054640Z");
    }

    #[test]
    fn ticks_follow_the_expression_with_seconds_and_time_zones() {
        let every_2s =
            Schedule::new("s", "*/2 * * * * *", "UTC", "default", template(), 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(every_2s.ticks(1_000, 7_000, 100).unwrap_or_default(), vec![2_000, 4_000, 6_000]);
        assert_eq!(every_2s.ticks(0, 10_000, 2).unwrap_or_default(), vec![2_000, 4_000], "capped");
        // 09:00 every day in Madrid is 08:00 UTC in winter.
        let madrid = Schedule::new("m", "0 9 * * *", "Europe/Madrid", "default", template(), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let dec_7 = 1_796_601_600_000; // 2026-12-07T00:00:00Z
        let next = madrid.next_tick(dec_7).unwrap_or_default();
        assert_eq!(run_id_for("m", next), "sched-m-20261207T080000Z");
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        let err = |r: Result<Schedule, String>| r.err().unwrap_or_default();
        assert!(err(Schedule::new("a", "61 * * * *", "UTC", "q", template(), 0)).contains("cron expression"));
        assert!(err(Schedule::new("a", "* * * * *", "Mars/Olympus", "q", template(), 0)).contains("time zone"));
        assert!(err(Schedule::new("a/b", "* * * * *", "UTC", "q", template(), 0)).contains("schedule name"));
        assert!(err(Schedule::new("a", "* * * * *", "UTC", "", template(), 0)).contains("queue name"));
        assert!(err(Schedule::new("a", "0 0 30 2 *", "UTC", "q", template(), 0)).contains("never fires"));
        let ok = Schedule::new("a", "@hourly", "UTC", "q", template(), 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.template.queue.as_deref(), Some("q"));
        assert_eq!(ok.template.status, RunStatus::Queued);
    }
}
