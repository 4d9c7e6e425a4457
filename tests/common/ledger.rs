//! The promise every write-fault test checks: **a write answered 2xx is stored**, and is
//! still there after recovery and after a restart; a write that was not stored was never
//! answered 2xx.
//!
//! Writers create items with names unique to the test, so what is stored can be matched
//! to what was answered without knowing the ids the service chose. Each attempt ends one
//! of three ways: acknowledged (2xx), answered as failed (a complete non-2xx answer), or
//! unknown (no whole answer: the service died or closed the connection mid-way), and only
//! the first is a promise.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Outcome;

/// How one attempted item was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Acknowledged,
    AnsweredFailed,
    Unknown,
}

/// When a request was sent and when its answer (or the lack of one) came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    sent: Duration,
    answered: Duration,
}

/// Every create attempted, by how it was answered.
pub struct Ledger {
    /// Each item's fate, and when its request was sent and answered (since `started`).
    items: Mutex<HashMap<String, (Fate, Span)>>,
    started: Instant,
    /// Creates attempted (requests, not items).
    requests: AtomicUsize,
    /// Complete answers by status and reason word (`""` for 2xx).
    answers: Mutex<BTreeMap<(u16, String), usize>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            items: Mutex::default(),
            started: Instant::now(),
            requests: AtomicUsize::new(0),
            answers: Mutex::default(),
        }
    }
}

/// What [`Ledger::check`] found; `Display` gives the line a test prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub requests: usize,
    pub attempted: usize,
    pub acknowledged: usize,
    pub answered_failed: usize,
    pub unknown: usize,
    /// Acknowledged items found in storage: must equal `acknowledged`.
    pub found: usize,
    /// Items answered as failed that are stored anyway (a commit whose answer was lost).
    pub answered_failed_but_stored: usize,
    /// Acknowledged items whose request was in flight while the fault happened, and how
    /// many of those are not stored (see [`Ledger::check_outside`]).
    pub in_flight_at_fault: usize,
    pub in_flight_lost: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} items attempted, {} acknowledged, {} found afterwards, {} answered as failed ({} of them stored anyway), {} with no whole answer",
            self.requests,
            self.attempted,
            self.acknowledged,
            self.found,
            self.answered_failed,
            self.answered_failed_but_stored,
            self.unknown
        )?;
        if self.in_flight_at_fault > 0 {
            write!(
                f,
                "; {} acknowledged while the fault happened, {} of them lost",
                self.in_flight_at_fault, self.in_flight_lost
            )?;
        }
        Ok(())
    }
}

impl Ledger {
    /// Creates `names` through `port`: one `POST /api/items` for one name, one bulk
    /// create (one transaction) for several. Returns how it ended.
    pub fn create(&self, port: u16, names: &[String]) -> Outcome {
        let sent = self.elapsed();
        let item = |name: &String| format!(r#"{{"name":"{name}","kind":"book"}}"#);
        let outcome = match names {
            [one] => super::post_json(port, "/api/items", &item(one)),
            many => {
                let items: Vec<String> = many.iter().map(item).collect();
                super::post_json(port, "/api/items/bulk", &format!("[{}]", items.join(",")))
            }
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let fate = match &outcome {
            Outcome::Complete { status, body } => {
                let reason = if (200..300).contains(status) {
                    String::new()
                } else {
                    serde_json::from_str::<serde_json::Value>(body)
                        .ok()
                        .and_then(|v| v["error"]["reason"].as_str().map(String::from))
                        .unwrap_or_else(|| format!("unparsable body {body:?}"))
                };
                *lock(&self.answers).entry((*status, reason)).or_default() += 1;
                if (200..300).contains(status) {
                    Fate::Acknowledged
                } else {
                    Fate::AnsweredFailed
                }
            }
            // Never sent: not stored, and the client knows it was not.
            Outcome::Refused => Fate::AnsweredFailed,
            // Sent, then no whole answer: either way is allowed.
            Outcome::NoAnswer | Outcome::Truncated(_) => Fate::Unknown,
        };
        let span = Span {
            sent,
            answered: self.elapsed(),
        };
        lock(&self.items).extend(names.iter().map(|name| (name.clone(), (fate, span))));
        outcome
    }

    /// Complete answers so far, by status and reason word.
    pub fn answers(&self) -> BTreeMap<(u16, String), usize> {
        lock(&self.answers).clone()
    }

    pub fn acknowledged(&self) -> usize {
        self.with(Fate::Acknowledged).len()
    }

    /// Time since the ledger started: answers are dated so, and a test dates its fault
    /// the same way for a failure message.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn with(&self, fate: Fate) -> HashMap<String, Span> {
        lock(&self.items)
            .iter()
            .filter(|(_, (f, _))| *f == fate)
            .map(|(name, (_, at))| (name.clone(), *at))
            .collect()
    }

    /// Checks the promise against the names found in storage; panics naming what broke.
    /// `failed_means_absent`: also require that nothing answered as failed is stored, for
    /// faults where a failure cannot have committed (a full SQLite file, a killed worker).
    pub fn check(&self, stored: &HashSet<String>, failed_means_absent: bool) -> Tally {
        self.check_outside(stored, failed_means_absent, None)
    }

    /// [`Ledger::check`], except for writes in flight while `fault` (from, to; see
    /// [`Ledger::elapsed`]) happened: their answer cannot be trusted (the kernel may
    /// acknowledge a sync that the fault then discards), so they are only counted.
    pub fn check_outside(
        &self,
        stored: &HashSet<String>,
        failed_means_absent: bool,
        fault: Option<(Duration, Duration)>,
    ) -> Tally {
        let during_fault =
            |span: &Span| fault.is_some_and(|(from, to)| span.sent <= to && span.answered >= from);
        let acknowledged = self.with(Fate::Acknowledged);
        let answered_failed = self.with(Fate::AnsweredFailed);
        let unknown = self.with(Fate::Unknown);
        let dated = |names: Vec<(&String, &Span)>| -> Vec<String> {
            let mut names: Vec<String> = names
                .into_iter()
                .map(|(name, span)| {
                    format!(
                        "{name} (sent {:?}, answered {:?})",
                        span.sent, span.answered
                    )
                })
                .collect();
            names.sort();
            names
        };
        let in_flight_lost = acknowledged
            .iter()
            .filter(|(name, span)| during_fault(span) && !stored.contains(*name))
            .count();
        let missing = dated(
            acknowledged
                .iter()
                .filter(|(name, span)| !during_fault(span) && !stored.contains(*name))
                .collect(),
        );
        let failed_but_stored = dated(
            answered_failed
                .iter()
                .filter(|(name, _)| stored.contains(*name))
                .collect(),
        );
        let tally = Tally {
            requests: self.requests.load(Ordering::Relaxed),
            attempted: acknowledged.len() + answered_failed.len() + unknown.len(),
            acknowledged: acknowledged.len(),
            answered_failed: answered_failed.len(),
            unknown: unknown.len(),
            found: acknowledged.len() - missing.len() - in_flight_lost,
            answered_failed_but_stored: failed_but_stored.len(),
            in_flight_at_fault: acknowledged
                .values()
                .filter(|span| during_fault(span))
                .count(),
            in_flight_lost,
        };
        let sample = |names: &[String]| -> Vec<String> { names.iter().take(5).cloned().collect() };
        assert!(
            missing.is_empty(),
            "{} writes answered 2xx are not stored (e.g. {:?}); {tally}; answers {:?}",
            missing.len(),
            sample(&missing),
            self.answers()
        );
        if failed_means_absent {
            assert!(
                failed_but_stored.is_empty(),
                "{} writes answered as failed are stored (e.g. {:?}); {tally}",
                failed_but_stored.len(),
                sample(&failed_but_stored)
            );
        }
        tally
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Threads that keep creating items through the given ports until stopped: every fourth
/// request a bulk create of `bulk` items, the others single creates.
pub struct Writers {
    pub ledger: Arc<Ledger>,
    ports: Arc<Mutex<Vec<u16>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    /// `threads` writers; writer `i` sends to `ports[i % ports.len()]`, names start with
    /// `prefix` (unique per test run, so a restarted service's earlier items never count).
    pub fn start(prefix: &str, ports: &[u16], threads: usize, bulk: usize) -> Writers {
        let ledger = Arc::new(Ledger::default());
        let stop = Arc::new(AtomicBool::new(false));
        let ports = Arc::new(Mutex::new(ports.to_vec()));
        let threads = (0..threads)
            .map(|writer| {
                let (ledger, stop, ports) = (ledger.clone(), stop.clone(), ports.clone());
                let prefix = format!("{prefix}-w{writer}");
                std::thread::spawn(move || {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let port = {
                            let ports = lock(&ports);
                            ports[(writer + n) % ports.len()]
                        };
                        let count = if n % 4 == 3 { bulk } else { 1 };
                        let names: Vec<String> =
                            (0..count).map(|i| format!("{prefix}-{n}-{i}")).collect();
                        if ledger.create(port, &names) == Outcome::Refused {
                            // The service is gone (killed, restarting): do not spin.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Writers {
            ledger,
            ports,
            stop,
            threads,
        }
    }

    /// Sends every later request to `ports` instead (a restarted service's new port).
    pub fn retarget(&self, ports: &[u16]) {
        *lock(&self.ports) = ports.to_vec();
    }

    /// Waits until `until` holds of the answers so far, or `timeout` passes; whether it held.
    pub fn wait_for(
        &self,
        timeout: Duration,
        until: impl Fn(&BTreeMap<(u16, String), usize>) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if until(&self.ledger.answers()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        until(&self.ledger.answers())
    }

    /// Waits until `more` writes beyond those acknowledged so far are acknowledged;
    /// panics, naming `what` was awaited and the answers so far, if that takes longer
    /// than `within`.
    pub fn expect_acknowledged(&self, more: usize, within: Duration, what: &str) {
        let target = self.ledger.acknowledged() + more;
        self.expect(
            within,
            &format!("{more} more writes acknowledged ({what})"),
            |_| self.ledger.acknowledged() >= target,
        );
    }

    /// Waits until the answers so far satisfy `until`; panics, naming `what` was awaited
    /// and the answers so far, if that takes longer than `within`.
    pub fn expect(
        &self,
        within: Duration,
        what: &str,
        until: impl Fn(&BTreeMap<(u16, String), usize>) -> bool,
    ) {
        let reached = self.wait_for(within, until);
        assert!(
            reached,
            "not within {within:?}: {what}; answers so far: {:?}",
            self.ledger.answers()
        );
    }

    /// Stops every writer, waits for its last request to end, and returns the ledger.
    pub fn stop(self) -> Arc<Ledger> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("a writer thread panicked");
        }
        self.ledger
    }
}

/// How many complete answers had `status` (any reason).
pub fn count_status(answers: &BTreeMap<(u16, String), usize>, status: u16) -> usize {
    answers
        .iter()
        .filter(|((code, _), _)| *code == status)
        .map(|(_, n)| n)
        .sum()
}

/// Every item name the service at `port` lists, page by page.
pub fn stored_names(port: u16) -> HashSet<String> {
    let mut names = HashSet::new();
    for page in 1.. {
        let (status, body) = super::http_get(port, &format!("/api/items?page={page}&per_page=100"));
        assert_eq!(status, 200, "listing page {page}: {body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let items = page["items"].as_array().unwrap();
        names.extend(
            items
                .iter()
                .map(|item| item["name"].as_str().unwrap().to_string()),
        );
        if items.len() < 100 {
            break;
        }
    }
    names
}
