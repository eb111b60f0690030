//! The reporter thread (T3): receives samples and process news, matches samples with their
//! process's address space, aggregates stacks, and at the end symbolizes them into a
//! `Profile`. Exporting that profile is the caller's choice of format (`crate::export`).

pub mod aggregate;
pub mod resolve;

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use crate::pipeline::ReportMsg;
use crate::profile::Profile;
use crate::stats::Stats;
use crate::symbolize::{KernelSymbols, Symbolizer};
use aggregate::Aggregator;
use resolve::{Resolved, Resolver};

/// Aggregates everything until all senders are gone, then returns the raw stacks.
pub fn collect(inbox: Receiver<ReportMsg>, stats: &Stats) -> Aggregator {
    let mut resolver = Resolver::default();
    let mut aggregator = Aggregator::default();
    let mut ready: Vec<Resolved> = Vec::new();
    for msg in inbox {
        match msg {
            ReportMsg::Trace(trace) => resolver.on_trace(trace, &mut ready),
            ReportMsg::Exec { pid, ktime_ns } => resolver.on_exec(pid, ktime_ns),
            ReportMsg::Exit { pid, ktime_ns } => resolver.on_exit(pid, ktime_ns),
            ReportMsg::Snapshot(snapshot) => resolver.on_snapshot(snapshot, &mut ready),
            ReportMsg::SnapshotFailed {
                pid,
                valid_from_ktime,
            } => resolver.on_snapshot_failed(pid, valid_from_ktime, &mut ready),
        }
        for (trace, snapshot) in ready.drain(..) {
            aggregator.add(&trace, snapshot.as_deref(), stats);
        }
    }
    resolver.drain(&mut ready);
    for (trace, snapshot) in ready.drain(..) {
        aggregator.add(&trace, snapshot.as_deref(), stats);
    }
    aggregator
}

/// Symbolizes the aggregated stacks into `template` (which carries times and period).
pub fn symbolize(aggregator: Aggregator, template: Profile, stats: &Arc<Stats>) -> Profile {
    let kernel = match KernelSymbols::load() {
        Ok(symbols) => Some(symbols),
        Err(err) => {
            crate::log::warn(&format!("kernel frames will not be symbolized: {err}"));
            None
        }
    };
    let mut symbolizer = Symbolizer::new(kernel);
    let profile = aggregator.into_profile(&mut symbolizer, template);
    let counts = symbolizer.stats();
    Stats::add(&stats.symbolization_misses, counts.symbols_missed);
    Stats::add(&stats.symbol_files_unreadable, counts.files_failed);
    profile
}
