//! Runs fresh simulation seeds until a time or run budget is spent (`scripts/simulate.sh HOURS`).
//!
//! ```text
//! flujo-sim [--hours H | --runs N] [--backend memory|sqlite|postgres|both|LIST] [--start SEED] [--regressions FILE] [--threads N]
//! ```
//! Every violation is printed with its replay command and, with `--regressions`, appended to that file as
//! `SEED BACKEND  # invariant: detail`, so the test command replays it from then on. Exit status 1 when any
//! seed broke an invariant.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flujo_sim::{simulate, Backend, SimOptions};

struct Args {
    hours: Option<f64>,
    runs: Option<u64>,
    backends: Vec<Backend>,
    start: u64,
    regressions: Option<String>,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        hours: None,
        runs: None,
        backends: vec![Backend::Memory, Backend::Sqlite],
        start: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
        regressions: None,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--hours" => args.hours = Some(value()?.parse().map_err(|_| "--hours takes a number")?),
            "--runs" => args.runs = Some(value()?.parse().map_err(|_| "--runs takes a number")?),
            "--start" => args.start = value()?.parse().map_err(|_| "--start takes a number")?,
            "--regressions" => args.regressions = Some(value()?),
            "--threads" => args.threads = value()?.parse().map_err(|_| "--threads takes a number")?,
            "--backend" => {
                let v = value()?;
                args.backends = match v.as_str() {
                    "both" => vec![Backend::Memory, Backend::Sqlite],
                    list => list
                        .split(',')
                        .map(|b| {
                            Backend::parse(b.trim())
                                .ok_or_else(|| format!("unknown backend {b} (memory, sqlite, postgres or both)"))
                        })
                        .collect::<Result<_, _>>()?,
                }
            }
            "-h" | "--help" => return Err(
                "usage: flujo-sim [--hours H | --runs N] [--backend memory|sqlite|postgres|both|a,b] [--start SEED] \
                            [--regressions FILE] [--threads N]"
                    .into(),
            ),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.hours.is_none() && args.runs.is_none() {
        args.runs = Some(1000);
    }
    Ok(args)
}

#[derive(Default)]
struct Totals {
    runs: AtomicU64,
    walks: AtomicU64,
    interrupted: AtomicU64,
    races: AtomicU64,
    takeovers: AtomicU64,
    budgeted: AtomicU64,
    refused: AtomicU64,
    /// Runs whose walks together paid more than the budget (calls paid again after a crash lost their record).
    overpaid: AtomicU64,
    faults: AtomicU64,
    effects: AtomicU64,
    violations: AtomicU64,
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let deadline = args.hours.map(|h| Instant::now() + Duration::from_secs_f64(h * 3600.0));
    eprintln!(
        "flujo-sim: seeds from {} on, {} thread(s), backends {:?}",
        args.start,
        args.threads,
        args.backends.iter().map(|b| b.name()).collect::<Vec<_>>()
    );
    let next = Arc::new(AtomicU64::new(0));
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let file = Arc::new(Mutex::new(()));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.threads.max(1))
        .map(|_| {
            let (next, totals, stop, file) = (next.clone(), totals.clone(), stop.clone(), file.clone());
            let (backends, start, runs, regressions) =
                (args.backends.clone(), args.start, args.runs, args.regressions.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if stop.load(Ordering::SeqCst)
                    || runs.is_some_and(|n| i >= n)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    break;
                }
                let seed = start.wrapping_add(i);
                let backend = backends[(i % backends.len() as u64) as usize];
                match simulate(seed, &SimOptions::new(backend)) {
                    Ok(r) => {
                        totals.runs.fetch_add(1, Ordering::Relaxed);
                        totals.walks.fetch_add(u64::from(r.walks), Ordering::Relaxed);
                        totals.interrupted.fetch_add(u64::from(r.interrupted), Ordering::Relaxed);
                        totals.races.fetch_add(u64::from(r.races), Ordering::Relaxed);
                        totals.takeovers.fetch_add(u64::from(r.takeovers), Ordering::Relaxed);
                        totals.budgeted.fetch_add(u64::from(r.limit.is_some()), Ordering::Relaxed);
                        totals.refused.fetch_add(u64::from(r.budget_refused), Ordering::Relaxed);
                        let overpaid = r.limit.is_some_and(|l| r.paid > l);
                        totals.overpaid.fetch_add(u64::from(overpaid), Ordering::Relaxed);
                        totals.faults.fetch_add(r.faults.total(), Ordering::Relaxed);
                        totals.effects.fetch_add(r.effects as u64, Ordering::Relaxed);
                    }
                    Err(v) => {
                        totals.runs.fetch_add(1, Ordering::Relaxed);
                        totals.violations.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{v}");
                        if let Some(path) = &regressions {
                            let _guard = file.lock().unwrap_or_else(|p| p.into_inner());
                            let line = format!(
                                "{} {}  # {}: {}\n",
                                v.seed,
                                v.backend,
                                v.invariant,
                                v.detail.replace('\n', " ")
                            );
                            let written = std::fs::OpenOptions::new()
                                .append(true)
                                .create(true)
                                .open(path)
                                .and_then(|mut f| f.write_all(line.as_bytes()));
                            if let Err(e) = written {
                                eprintln!("cannot record the seed in {path}: {e}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    // Progress every minute until the workers are done.
    let reporter = {
        let (totals, stop) = (totals.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= Duration::from_secs(60) {
                    last = Instant::now();
                    eprintln!("{}", line(&totals, started));
                }
            }
        })
    };
    for w in workers {
        let _ = w.join();
    }
    stop.store(true, Ordering::SeqCst);
    let _ = reporter.join();
    println!("{}", line(&totals, started));
    if totals.violations.load(Ordering::SeqCst) > 0 {
        std::process::exit(1);
    }
}

fn line(t: &Totals, started: Instant) -> String {
    format!(
        "{:.0} s: {} simulated runs ({} with a budget, {} stopped by it, {} paid past it by calls repeated after a \
         crash), {} walks ({} interrupted by faults, {} raced by a second runner, {} taken over by another host), {} \
         faults injected, {} side effects, {} violation(s)",
        started.elapsed().as_secs_f64(),
        t.runs.load(Ordering::Relaxed),
        t.budgeted.load(Ordering::Relaxed),
        t.refused.load(Ordering::Relaxed),
        t.overpaid.load(Ordering::Relaxed),
        t.walks.load(Ordering::Relaxed),
        t.interrupted.load(Ordering::Relaxed),
        t.races.load(Ordering::Relaxed),
        t.takeovers.load(Ordering::Relaxed),
        t.faults.load(Ordering::Relaxed),
        t.effects.load(Ordering::Relaxed),
        t.violations.load(Ordering::Relaxed),
    )
}
