//! A profiling session: loads the sampler, starts the three worker threads, and shuts them down
//! in order (detach sampling → drain the perf buffers → maintainer → reporter's final flush).
//! `record` drives one; the daemon will drive one with periodic flushes.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::pipeline::{MAINTAINER_QUEUE, REPORT_QUEUE};
use crate::poller::{self, Router};
use crate::process::maintainer::Maintainer;
use crate::process::source::Procfs;
use crate::profile::Profile;
use crate::report;
use crate::sampler::{Sampler, Target};
use crate::stats::Stats;

/// A running session.
pub struct Session {
    sampler: Sampler,
    stop: Arc<AtomicBool>,
    poller: JoinHandle<io::Result<()>>,
    maintainer: JoinHandle<()>,
    reporter: JoinHandle<Profile>,
    template: Sender<Profile>,
    stats: Arc<Stats>,
    frequency_hz: u64,
    started: Instant,
    started_unix_ns: u64,
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    thread::Builder::new().name(name.to_string()).spawn(f)
}

impl Session {
    /// Loads the BPF programs and starts the worker threads; sampling starts with `start`.
    pub fn load(target: &Target, frequency_hz: u64, stats: Arc<Stats>) -> io::Result<Self> {
        let sampler = Sampler::load(target)?;
        let events = sampler.events()?;
        let (report_tx, report_rx) = sync_channel(REPORT_QUEUE);
        let (maintain_tx, maintain_rx) = sync_channel(MAINTAINER_QUEUE);
        let (template_tx, template_rx) = channel::<Profile>();
        let stop = Arc::new(AtomicBool::new(false));

        let reporter_stats = stats.clone();
        let reporter = spawn("reporter", move || {
            let aggregator = report::collect(report_rx, &reporter_stats);
            let template = template_rx.recv().unwrap_or_default();
            report::symbolize(aggregator, template, &reporter_stats)
        })?;
        let source = Procfs {
            exec_gen: Some(sampler.exec_gen()?),
        };
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
        );
        let maintainer = spawn("maintainer", move || maintainer.run(maintain_rx))?;
        let router = Router::new(report_tx, maintain_tx, stats.clone());
        let pages = poller::pages_per_cpu(frequency_hz);
        let poll_stop = stop.clone();
        let poller = spawn("poller", move || {
            poller::run(events, pages, router, poll_stop)
        })?;

        Ok(Self {
            sampler,
            stop,
            poller,
            maintainer,
            reporter,
            template: template_tx,
            stats,
            frequency_hz,
            started: Instant::now(),
            started_unix_ns: 0,
        })
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Attaches the sampler to every CPU.
    pub fn start(&mut self) -> io::Result<()> {
        self.started = Instant::now();
        self.started_unix_ns = unix_now_ns();
        self.sampler.start(self.frequency_hz)
    }

    /// Whether the poller has died (it only stops on its own after an error).
    pub fn poller_failed(&self) -> bool {
        self.poller.is_finished()
    }

    /// Stops sampling, drains every queue and returns the symbolized profile.
    pub fn finish(mut self) -> io::Result<Profile> {
        self.sampler.stop();
        let duration = self.started.elapsed();
        self.stop.store(true, Ordering::Release);
        let polled = self
            .poller
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("poller panicked")));
        let _ = self.maintainer.join();
        if let Err(err) = self.sampler.read_counters(&self.stats) {
            crate::log::warn(&format!("cannot read the BPF counters: {err}"));
        }
        let template = Profile {
            start_unix_ns: self.started_unix_ns,
            duration_ns: duration.as_nanos() as u64,
            period_ns: 1_000_000_000 / self.frequency_hz.max(1),
            samples: Vec::new(),
        };
        let _ = self.template.send(template);
        let profile = self
            .reporter
            .join()
            .map_err(|_| io::Error::other("reporter panicked"))?;
        polled.map_err(|e| {
            io::Error::new(e.kind(), format!("reading the perf buffers failed: {e}"))
        })?;
        Ok(profile)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
