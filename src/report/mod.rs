//! The reporter thread (T3): receives samples, file registrations and the kernel's VMA reports,
//! aggregates stacks, and at the end symbolizes them into a `Profile`. Exporting that profile is
//! the caller's choice of format (`crate::export`).

pub mod aggregate;
pub mod vmas;

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use crate::pipeline::ReportMsg;
use crate::profile::Profile;
use crate::stats::Stats;
use crate::symbolize::{KernelSymbols, Symbolizer};
use aggregate::Aggregator;
use vmas::Vmas;

/// Aggregates everything until all senders are gone, then returns the raw stacks.
pub fn collect(inbox: Receiver<ReportMsg>, stats: &Stats) -> Aggregator {
    let mut aggregator = Aggregator::default();
    let mut vmas = Vmas::default();
    for msg in inbox {
        match msg {
            ReportMsg::Trace(trace) => aggregator.add(&trace, &vmas, stats),
            ReportMsg::Vma(record) => vmas.add(record),
            ReportMsg::File(file) => aggregator.on_file(file),
            ReportMsg::Exec(exec) => {
                vmas.boundary(exec.pid, exec.ktime_ns);
                aggregator.on_exec(&exec);
            }
            ReportMsg::Exit { pid, ktime_ns } => vmas.boundary(pid, ktime_ns),
        }
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
    if aggregator.unknown_file_ids > 0 {
        crate::log::warn(&format!(
            "{} frames named a file never announced",
            aggregator.unknown_file_ids
        ));
    }
    let mut symbolizer = Symbolizer::new(kernel);
    let profile = aggregator.into_profile(&mut symbolizer, template);
    let counts = symbolizer.stats();
    Stats::add(&stats.symbolization_misses, counts.symbols_missed);
    Stats::add(&stats.symbol_files_unreadable, counts.files_failed);
    profile
}
