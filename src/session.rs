//! A profiling session: loads the sampler, starts the worker threads, and shuts them down in
//! order (detach sampling → drain the perf buffers → maintainer's final audit → reporter's
//! final window). `record` drives one with a single window; the daemon with periodic ones.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::maintainer::Maintainer;
use crate::pipeline::{ReportMsg, MAINTAINER_QUEUE, REPORT_QUEUE};
use crate::poller::{self, Router};
use crate::process::filter::ProcessFilter;
use crate::process::source::Procfs;
use crate::profile::Profile;
use crate::reporter::{self, unix_now_ns, Windows};
use crate::sampler::{Sampler, Target};
use crate::stats::Stats;
use crate::sys::poll::Waker;
use crate::tables::BpfTables;

/// What to profile and how.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub target: Target,
    pub frequency_hz: u64,
    /// Cut a profile every `window` (daemon), or one for the whole session (`None`).
    pub window: Option<Duration>,
    /// Which processes the profiles keep (the sampler still samples the whole target).
    pub filter: ProcessFilter,
}

/// A running session.
pub struct Session {
    sampler: Sampler,
    stop: Arc<Waker>,
    poller: JoinHandle<io::Result<()>>,
    maintainer: JoinHandle<()>,
    reporter: JoinHandle<()>,
    /// Held only until `start`, to tell the reporter when the first window begins.
    starter: Option<SyncSender<Vec<ReportMsg>>>,
    stats: Arc<Stats>,
    frequency_hz: u64,
    started: Instant,
    /// How long the end may wait for unwind tables still being built, in ms (the maintainer's).
    settle_ms: Arc<AtomicU64>,
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    thread::Builder::new().name(name.to_string()).spawn(f)
}

impl Session {
    /// Loads the BPF programs and starts the worker threads; sampling starts with `start`.
    /// Every profile the reporter cuts goes to `sink`, on the reporter's thread.
    pub fn load(
        config: &SessionConfig,
        stats: Arc<Stats>,
        sink: impl FnMut(Profile) + Send + 'static,
    ) -> io::Result<Self> {
        let sampler = Sampler::load(&config.target)?;
        let events = sampler.events()?;
        let (report_tx, report_rx) = sync_channel(REPORT_QUEUE);
        let (maintain_tx, maintain_rx) = sync_channel(MAINTAINER_QUEUE);
        let stop = Arc::new(Waker::new()?);

        let windows = Windows {
            interval: config.window,
            period_ns: 1_000_000_000 / config.frequency_hz.max(1),
        };
        let reporter_stats = stats.clone();
        let tables: Box<dyn reporter::complete::Tables + Send> =
            Box::new(reporter::complete::MapTables {
                file_tables: sampler.file_tables()?,
                buckets: sampler.unwind_buckets()?,
            });
        let filter = config.filter.clone();
        let reporter = spawn("reporter", move || {
            reporter::run(
                report_rx,
                reporter_stats,
                windows,
                Some(tables),
                filter,
                sink,
            )
        })?;
        let source = Procfs;
        let pid_mappings = sampler.pid_mappings()?;
        Stats::set(
            &stats.pid_map_capacity,
            u64::from(pid_mappings.max_entries()),
        );
        let maintainer = Maintainer::new(
            pid_mappings,
            source,
            sampler.cache_invalidator()?,
            report_tx.clone(),
            stats.clone(),
        )
        .with_tables(Box::new(BpfTables::new(
            sampler.unwind_buckets()?,
            Some(sampler.file_tables()?),
        )))
        .sync_on_exec(matches!(config.target, Target::Pids(_)))
        .with_python(Box::new(sampler.python_maps()?));
        let settle_ms = maintainer.settle_limit();
        let maintainer = spawn("maintainer", move || maintainer.run(maintain_rx))?;
        let routers = (
            Router::new(report_tx.clone(), maintain_tx.clone(), stats.clone()),
            Router::new(report_tx.clone(), maintain_tx, stats.clone()),
        );
        let pages = poller::pages_per_cpu(config.frequency_hz);
        let poll_every = poller::poll_interval(config.window);
        let poll_stop = stop.clone();
        let (samples, reports) = events;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let poller = spawn("poller", move || {
            let polled = poller::run(
                samples, reports, pages, poll_every, routers, poll_stop, ready_tx,
            );
            // The main thread sleeps long: tell it at once that the poller has stopped.
            crate::sys::signal::wake();
            polled
        })?;
        if ready_rx.recv().is_err() {
            // The poller could not open the rings: its error says why.
            return Err(match poller.join() {
                Ok(Err(err)) => err,
                _ => io::Error::other("the poller stopped before it was ready"),
            });
        }

        Ok(Self {
            sampler,
            stop,
            poller,
            maintainer,
            reporter,
            starter: Some(report_tx),
            stats,
            frequency_hz: config.frequency_hz,
            started: Instant::now(),
            settle_ms,
        })
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Attaches the sampler to every CPU; the first window starts now.
    pub fn start(&mut self) -> io::Result<()> {
        self.started = Instant::now();
        if let Some(starter) = self.starter.take() {
            let _ = starter.send(vec![ReportMsg::Start {
                unix_ns: unix_now_ns(),
                at: self.started,
            }]);
        }
        self.sampler.start(self.frequency_hz)
    }

    /// Whether the poller has died (it only stops on its own after an error).
    pub fn poller_failed(&self) -> bool {
        self.poller.is_finished()
    }

    /// Stops sampling and drains every queue; the reporter hands its last window to the sink
    /// before this returns. Walks cut at files whose tables are still being built are finished
    /// when those are done, if that takes at most `settle`.
    pub fn finish(mut self, settle: Duration) -> io::Result<()> {
        let ms = settle.as_millis().min(u128::from(u64::MAX)) as u64;
        self.settle_ms.store(ms, Ordering::Relaxed);
        self.sampler.stop();
        self.starter = None;
        self.stop.raise();
        let polled = self
            .poller
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("poller panicked")));
        let _ = self.maintainer.join();
        if let Err(err) = self.sampler.read_counters(&self.stats) {
            crate::log::warn(&format!("cannot read the BPF counters: {err}"));
        }
        self.reporter
            .join()
            .map_err(|_| io::Error::other("reporter panicked"))?;
        polled
            .map_err(|e| io::Error::new(e.kind(), format!("reading the perf buffers failed: {e}")))
    }

    /// Copies the BPF-side counters into the stats now (the daemon's periodic log line).
    pub fn refresh_counters(&self) {
        let _ = self.sampler.read_counters(&self.stats);
    }
}
