//! The poller thread (T1): reads the perf buffers, decodes records, and forwards them: samples,
//! VMA reports, execs and exits to the reporter; the sampler's reports, execs, exits and the set
//! of recently sampled PIDs to the maintainer.
//!
//! It never blocks on a consumer: a full queue is a counted drop.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use std::time::{Duration, Instant};

use crate::layout::{consts, decode, Record};
use crate::pipeline::Trigger;
use crate::pipeline::{MaintainerMsg, ReportMsg};
use crate::stats::Stats;
use crate::sys::bpf::{Map, PerfBuffer, PerfHandler, Wakeup};
use crate::sys::poll::Waker;

/// The samples ring wakes the reader when this share of it is waiting (1/8): waking it for each
/// record costs the sampled program ~5 µs (docs/performance.md, "Wakeups"), and at 19 Hz an
/// eighth of the ring is still seconds of samples, so the poll timeout reads them first. The
/// other 7/8 absorb a burst of deep stacks while a loaded machine is slow to run the poller.
const WATERMARK_DIVISOR: usize = 8;
/// Nothing on the samples buffer is urgent (what is goes on the prompt one), and each wakeup
/// of this thread also wakes the reporter (and the maintainer): on a VM a wakeup costs tens of
/// µs, which at a few a second was most of the profiler's user-space cost at 19 Hz. The end of
/// a session does not wait for this: the stop [`Waker`] ends the wait at once.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// At least this often when windows are short.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long the poller may leave samples in the rings: [`POLL_INTERVAL`], or a quarter of a
/// window when windows are shorter than 8 s, so that a window's samples reach the reporter
/// before it closes that window (they are counted in the window they arrive in).
pub fn poll_interval(window: Option<Duration>) -> Duration {
    let quarter = window.map_or(POLL_INTERVAL, |w| w / 4);
    quarter.clamp(MIN_POLL_INTERVAL, POLL_INTERVAL)
}

/// Decodes and routes records. Messages are collected during one poll cycle and sent as one
/// batch per consumer: a consumer then wakes once per cycle, not once per record (which, with
/// thousands of exits a second on a busy machine, cost more than the work itself).
pub struct Router {
    to_reporter: SyncSender<Vec<ReportMsg>>,
    to_maintainer: SyncSender<Vec<MaintainerMsg>>,
    for_reporter: Vec<ReportMsg>,
    for_maintainer: Vec<MaintainerMsg>,
    /// PIDs sampled since the last `Sampled` message to the maintainer.
    sampled: HashSet<u32>,
    /// Files the samples named since then.
    files_used: HashMap<u32, u32>,
    last_sampled_sent: Instant,
    stats: Arc<Stats>,
}

/// How often the maintainer hears which PIDs were sampled (for its eviction order and the order
/// in which it builds tables); it rides in the batch of the 2 s poll cycle.
const SAMPLED_INTERVAL: Duration = Duration::from_secs(2);
/// Messages per batch at most (bounds the memory a full queue holds).
const MAX_BATCH: usize = 4096;

impl Router {
    pub fn new(
        to_reporter: SyncSender<Vec<ReportMsg>>,
        to_maintainer: SyncSender<Vec<MaintainerMsg>>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            to_reporter,
            to_maintainer,
            for_reporter: Vec::new(),
            for_maintainer: Vec::new(),
            sampled: HashSet::new(),
            files_used: HashMap::new(),
            last_sampled_sent: Instant::now(),
            stats,
        }
    }

    fn report(&mut self, msg: ReportMsg) {
        self.for_reporter.push(msg);
        if self.for_reporter.len() >= MAX_BATCH {
            self.send();
        }
    }

    fn maintain(&mut self, msg: MaintainerMsg) {
        self.for_maintainer.push(msg);
        if self.for_maintainer.len() >= MAX_BATCH {
            self.send();
        }
    }

    /// Sends what this cycle collected. A full queue is a counted drop, never a wait.
    pub fn send(&mut self) {
        if !self.for_reporter.is_empty() {
            let batch = std::mem::take(&mut self.for_reporter);
            if let Err(TrySendError::Full(batch)) = self.to_reporter.try_send(batch) {
                let traces = batch
                    .iter()
                    .filter(|m| matches!(m, ReportMsg::Trace(_)))
                    .count();
                Stats::add(&self.stats.samples_queue_dropped, traces as u64);
                Stats::add(
                    &self.stats.events_queue_dropped,
                    (batch.len() - traces) as u64,
                );
            }
        }
        if !self.for_maintainer.is_empty() {
            let batch = std::mem::take(&mut self.for_maintainer);
            if let Err(TrySendError::Full(batch)) = self.to_maintainer.try_send(batch) {
                Stats::add(&self.stats.maintainer_queue_dropped, batch.len() as u64);
            }
        }
    }

    pub fn route(&mut self, record: Record) {
        match record {
            Record::Trace(trace) => {
                Stats::inc(&self.stats.samples);
                self.sampled.insert(trace.pid);
                let resolved = trace.user.iter().filter(|f| f.is_resolved());
                for frame in resolved {
                    *self.files_used.entry(frame.file_id).or_default() += 1;
                }
                self.report(ReportMsg::Trace(trace));
            }
            Record::Exec(exec) => {
                self.maintain(MaintainerMsg::Report {
                    pid: exec.pid,
                    start_ns: exec.start_ns,
                    exec_gen: exec.exec_gen,
                    trigger: Trigger::Exec,
                });
                self.maintain(MaintainerMsg::Executed {
                    path: exec.path.clone(),
                    dev: exec.dev,
                    inode: exec.inode,
                });
                self.report(ReportMsg::Exec(exec));
            }
            Record::Exit {
                pid,
                start_ns,
                ktime_ns,
            } => {
                self.maintain(MaintainerMsg::Exit { pid, start_ns });
                self.report(ReportMsg::Exit { pid, ktime_ns });
            }
            Record::UnknownPid {
                pid,
                start_ns,
                exec_gen,
                ..
            } => self.maintain(MaintainerMsg::Report {
                pid,
                start_ns,
                exec_gen,
                trigger: Trigger::UnknownPid,
            }),
            Record::UnknownMapping {
                pid,
                start_ns,
                exec_gen,
                addr,
                ..
            } => self.maintain(MaintainerMsg::Report {
                pid,
                start_ns,
                exec_gen,
                trigger: if addr & consts::REPORT_ADDR_NEW_FILE != 0 {
                    Trigger::NewFile
                } else {
                    Trigger::UnknownMapping
                },
            }),
            Record::Vma(vma) => self.report(ReportMsg::Vma(vma)),
            Record::Stack(stack) => self.report(ReportMsg::Stack(stack)),
            Record::Mappings(mappings) => self.report(ReportMsg::Mappings(mappings)),
        }
    }

    /// Tells the maintainer which PIDs were sampled, once per interval.
    pub fn tick(&mut self) {
        if self.last_sampled_sent.elapsed() >= SAMPLED_INTERVAL && !self.sampled.is_empty() {
            let pids = self.sampled.drain().collect();
            self.maintain(MaintainerMsg::Sampled(pids));
            let files: Vec<(u32, u32)> = self.files_used.drain().collect();
            if !files.is_empty() {
                self.maintain(MaintainerMsg::FilesUsed(files));
            }
            self.last_sampled_sent = Instant::now();
        }
    }
}

impl PerfHandler for Router {
    fn sample(&mut self, _cpu: i32, data: &[u8]) {
        match decode(data) {
            Ok(record) => self.route(record),
            Err(err) => {
                Stats::inc(&self.stats.records_undecodable);
                crate::log::debug(&format!("undecodable record: {err:?}"));
            }
        }
    }

    fn lost(&mut self, _cpu: i32, count: u64) {
        Stats::add(&self.stats.samples_lost, count);
    }
}

/// Perf ring pages per CPU of the prompt buffer (reports, execs, exits, stack copies): 512 KiB,
/// room for eight full stack copies (62 KiB each).
const REPORT_PAGES: usize = 128;

/// Perf ring pages per CPU for a sampling frequency: room for about half a second of the
/// largest records, at least 256 KiB (at 19 Hz, over a minute of typical ones).
pub fn pages_per_cpu(frequency_hz: u64) -> usize {
    let bytes = frequency_hz as usize * 2_100 / 2;
    (bytes / 4096).max(64).next_power_of_two().min(1024)
}

/// Polls until `stop` is set, then drains what is left. Samples (and the VMA reports they need)
/// arrive on `samples`, batched; reports, execs, exits and stack copies on `reports`, each
/// waking the poller, so the maintainer hears of a new process within a millisecond and the
/// reporter reads the rest of a copied stack while its thread is still there.
pub fn run(
    samples: Map,
    reports: Map,
    pages: usize,
    interval: Duration,
    routers: (Router, Router),
    stop: Arc<Waker>,
    ready: std::sync::mpsc::Sender<()>,
) -> io::Result<()> {
    let timeout_ms = interval.as_millis().min(i32::MAX as u128) as i32;
    let watermark = (pages * 4096 / WATERMARK_DIVISOR) as u32;
    let mut samples = PerfBuffer::new(&samples, pages, Wakeup::Bytes(watermark), routers.0)?;
    // Room for several stack copies (up to 33 KiB each) per CPU between two reads.
    let mut reports = PerfBuffer::new(&reports, REPORT_PAGES, Wakeup::Records(1), routers.1)?;
    // Until both rings are in their maps, the sampler's records go nowhere (a lost exec, or a
    // lost report that holds the next one back for REPORT_INTERVAL_NS): sampling waits for this.
    let _ = ready.send(());
    while !stop.is_raised() {
        crate::sys::poll::wait_readable(
            &[samples.epoll_fd(), reports.epoll_fd(), stop.fd()],
            timeout_ms,
        )?;
        reports.consume()?;
        reports.handler_mut().send();
        samples.consume()?;
        samples.handler_mut().tick();
        samples.handler_mut().send();
    }
    reports.consume()?;
    reports.handler_mut().send();
    samples.consume()?;
    let at = Instant::now();
    samples.handler_mut().report(ReportMsg::Stop { at });
    samples.handler_mut().send();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{consts, RawTrace, UserFrame};
    use std::sync::mpsc::sync_channel;

    fn trace(pid: u32) -> Record {
        Record::Trace(RawTrace {
            pid,
            tid: pid,
            cpu: 0,
            ktime_ns: 1,
            comm: [0; 16],
            flags: 0,
            kernel: vec![],
            user: vec![UserFrame {
                address: 0x10,
                file_id: 9,
                flags: consts::FRAME_RESOLVED as u32,
            }],
        })
    }

    #[test]
    fn routes_reports_to_the_maintainer_and_samples_to_the_reporter() {
        let (rtx, rrx) = sync_channel(16);
        let (mtx, mrx) = sync_channel(16);
        let stats = Arc::new(Stats::default());
        let mut router = Router::new(rtx, mtx, stats.clone());
        router.route(trace(5));
        router.route(Record::UnknownPid {
            pid: 5,
            start_ns: 77,
            exec_gen: 78,
            ktime_ns: 1,
        });
        router.route(Record::UnknownMapping {
            pid: 5,
            start_ns: 77,
            exec_gen: 78,
            ktime_ns: 1,
            addr: 9,
        });
        router.route(Record::Exit {
            pid: 5,
            start_ns: 77,
            ktime_ns: 9,
        });
        router.last_sampled_sent -= SAMPLED_INTERVAL;
        router.tick();
        assert!(
            mrx.try_recv().is_err(),
            "nothing is sent before the end of the cycle"
        );
        router.send();
        let to_maintainer: Vec<_> = mrx.try_iter().flatten().collect();
        assert_eq!(
            to_maintainer,
            vec![
                MaintainerMsg::Report {
                    pid: 5,
                    start_ns: 77,
                    exec_gen: 78,
                    trigger: Trigger::UnknownPid
                },
                MaintainerMsg::Report {
                    pid: 5,
                    start_ns: 77,
                    exec_gen: 78,
                    trigger: Trigger::UnknownMapping
                },
                MaintainerMsg::Exit {
                    pid: 5,
                    start_ns: 77
                },
                MaintainerMsg::Sampled(vec![5]),
                MaintainerMsg::FilesUsed(vec![(9, 1)]),
            ]
        );
        assert_eq!(
            rrx.try_iter().flatten().count(),
            2,
            "the trace and the exit"
        );
        assert_eq!(Stats::get(&stats.samples), 1);
    }

    #[test]
    fn a_full_reporter_queue_is_a_counted_drop() {
        let (rtx, _rrx) = sync_channel(1);
        let (mtx, _mrx) = sync_channel(16);
        let stats = Arc::new(Stats::default());
        let mut router = Router::new(rtx, mtx, stats.clone());
        router.route(trace(1));
        router.send();
        router.route(trace(1));
        router.route(trace(1));
        router.send();
        assert_eq!(
            Stats::get(&stats.samples_queue_dropped),
            2,
            "the whole second batch"
        );
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(pages_per_cpu(99), 64);
        assert_eq!(pages_per_cpu(10_000), 1024);
        assert!(pages_per_cpu(1000).is_power_of_two());
    }

    #[test]
    fn short_windows_are_polled_within_a_quarter_window() {
        assert_eq!(poll_interval(None), POLL_INTERVAL);
        assert_eq!(poll_interval(Some(Duration::from_secs(60))), POLL_INTERVAL);
        assert_eq!(
            poll_interval(Some(Duration::from_secs(1))),
            Duration::from_millis(250)
        );
        assert_eq!(
            poll_interval(Some(Duration::from_millis(10))),
            MIN_POLL_INTERVAL
        );
    }
}
