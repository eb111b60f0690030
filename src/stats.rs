//! The session's counters: one struct of atomics shared by every thread, printed in the summary
//! and written as JSON by `--stats-json`. Every drop anywhere in the pipeline has a counter here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// The session's counters (docs/architecture.md, "Counters").
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        impl Stats {
            /// Every counter as (name, value), in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Stack samples received from the kernel.
    samples,
    /// Samples the kernel dropped because a perf ring was full.
    samples_lost,
    /// Samples the BPF program could not hand to the perf buffer.
    samples_send_failed,
    /// Samples dropped because the reporter fell behind (its queue was full).
    samples_queue_dropped,
    /// Samples of processes the daemon's `--comm`/`--cgroup` filter leaves out.
    samples_filtered,
    /// Records that did not decode (a version mismatch or a bug).
    records_undecodable,
    /// BPF program runs on non-idle tasks, and those skipped by the PID filter.
    bpf_samples,
    bpf_filtered,
    kernel_stack_errors,
    user_stack_errors,
    /// Process events (exec/exit) the BPF side could not send.
    process_events_lost,
    /// Exits the BPF side did not send because user space never heard of the process (no
    /// sample of it was reported): nothing to clean up, so nothing to wake a thread for.
    exits_quiet,
    /// Execs the BPF side did not send: of processes never reported, into a file whose unwind
    /// table exists (nobody needs them; a process sampled later is named by its sync).
    execs_quiet,
    /// User stacks the BPF side walked as a sampled process began to exit (before its address
    /// space was torn down), and samples taken during the teardown that were given that stack.
    exit_walks,
    exit_stacks_used,
    /// Executable mappings the sampler looked up itself for a walk that stopped at them, and
    /// recorded for first sight (the walk then went on).
    vmas_learned,
    /// Mappings the exit walk looked up itself (it may, as often as it needs), and the
    /// first-sight lists sent as processes with walks waiting in user space exited.
    exit_vmas_learned,
    mappings_sent,
    /// Forked children that could not be added to the PID filter (map full).
    pid_filter_full,
    /// CPython (bpf/python.h): samples of processes marked as CPython, interpreter frames
    /// recorded, and Python walks cut by reason: the thread's state not found, a frame that
    /// could not be read, an eval loop on the native stack with no interpreter frame left.
    python_samples,
    python_frames,
    python_no_thread,
    python_read_fault,
    python_mismatch,
    /// CPython processes marked for the walk, and code objects that could not be read.
    python_processes,
    python_code_unreadable,
    /// Distinct processes seen, and whole-process exits observed.
    pids_seen,
    pids_exited,
    /// `/proc/PID/maps` syncs done, and those that failed (process gone, permission).
    syncs,
    sync_failures,
    /// Process events dropped because the reporter's queue was full.
    events_queue_dropped,
    /// Messages to the maintainer dropped because its queue was full.
    maintainer_queue_dropped,
    /// Raw user frames resolved in user space (through a VMA report) to a file, or left raw.
    raw_frames_resolved,
    raw_frames_unresolved,
    /// Reports from the sampler, and what the maintainer did about them.
    unknown_pid_reports,
    unknown_mapping_reports,
    resyncs,
    pid_reuses,
    exits_by_sweep,
    /// Events that did not fit the process's state (duplicate exit, late report): no-ops.
    events_ignored,
    /// pid_mappings writes: entries updated and deleted, deletes skipped because the key was
    /// already absent, and failures (must stay 0).
    map_updates,
    map_deletes,
    map_delete_absent,
    map_delete_errors,
    map_update_errors,
    /// Processes whose entries were dropped because the map was full.
    map_full_evictions,
    /// From the last audit: entries in the map, entries no live process owns (must be 0), and
    /// entries live processes own that the map lacks.
    pid_map_entries,
    /// The map's capacity (entries).
    pid_map_capacity,
    /// What the live processes need: the map must hold exactly this many.
    expected_pid_entries,
    stale_pid_entries,
    missing_pid_entries,
    /// Executable files registered, released, and with inconsistent reference counts.
    files_loaded,
    files_unloaded,
    leaked_files,
    /// User frames the sampler resolved through pid_mappings (of which from its per-CPU cache),
    /// and those it could not (no entry for the PID, or only its marker).
    frames_resolved_in_bpf,
    frames_cache_hits,
    frames_unknown_pid,
    frames_unknown_mapping,
    /// Of the resolved frames, those of processes (or mappings) not synced yet, resolved from
    /// the first-sight list and `file_tables`; frames whose file was not registered yet (their
    /// walk stops); executable mappings the list had no slot for.
    frames_first_sight,
    first_sight_unknown_file,
    first_sight_slots_full,
    /// Walks cut at a file without a table yet whose registers and stack the sampler copied
    /// (and those it could not copy); of the copied ones, those finished in user space that
    /// reached the outermost frame ("completed later") or did not, those whose stack record was
    /// lost, and those that waited too long.
    stacks_copied,
    stack_copy_failed,
    samples_completed_later,
    completion_cut,
    completion_stack_missing,
    completion_gave_up,
    /// Full stack copies extended with the rest of the stack read from the live process, those
    /// not extended because too many bytes were held already, and completed walks that reached
    /// the outermost frame through those bytes.
    stacks_read_live,
    stacks_live_skipped,
    completed_with_live_stack,
    /// Stack records of a process already gone: completed with the code mappings an earlier
    /// record of the same process brought, or with the sampler's list alone.
    stack_maps_from_earlier,
    stack_maps_gone,
    /// VMA reports the sampler sent for addresses it could not resolve.
    vma_reports,
    /// Distinct stacks gathered in the current window so far (a gauge, before symbolization:
    /// what `record`'s progress line shows of the profile's growth).
    window_stacks,
    /// User stacks dropped because their innermost address was in no VMA (inside execve).
    user_stacks_stale,
    /// Unwind tables loaded into the kernel, unloaded, files without usable call-frame
    /// information (walked with frame pointers), tables that did not fit, and buckets in use.
    unwind_tables_loaded,
    unwind_tables_unloaded,
    unwind_tables_empty,
    unwind_tables_no_room,
    /// Tables evicted (least recently sampled first) to make room for new ones.
    unwind_tables_evicted,
    /// Tables read from the on-disk cache instead of being built.
    unwind_tables_cached,
    unwind_buckets_used,
    /// User frames stepped with an unwind table, and with frame pointers.
    frames_unwound_by_table,
    frames_unwound_by_fp,
    /// How user stack walks ended.
    unwind_outermost,
    unwind_no_mapping,
    unwind_no_info,
    unwind_bad_cfa,
    unwind_read_fault,
    unwind_depth_limit,
    unwind_unsupported,
    unwind_fp_end,
    /// Profile windows cut (daemon), and window files written, failed and rotated away.
    windows,
    output_files_written,
    output_files_failed,
    output_files_rotated,
    /// Frames without a symbol (shown as `module+0xOFFSET` or `[unknown]`).
    symbolization_misses,
    /// Files that could not be opened for symbolization.
    symbol_files_unreadable,
    /// OTLP/HTTP requests made (first tries and retries).
    export_attempts,
    /// OTLP/HTTP requests that were retries (after 429/502/503/504 or a connection failure).
    export_retries,
    /// Windows the collector accepted (2xx).
    export_delivered,
    /// Windows not retried: refused with a final status (400, 401, 500...) or failing in a way a
    /// retry cannot fix (a redirect). TLS failures surface as I/O errors and are retried like a
    /// collector that is down.
    export_rejected,
    /// Windows dropped unsent: the oldest when the export queue was full, or left at shutdown.
    export_dropped,
    /// Delivered windows whose response reported rejected profiles (`partial_success`).
    export_partial_success,
    /// Bytes sent in delivered requests (after gzip).
    export_bytes,
    /// Windows in the export queue now, counting the one being sent (a gauge).
    export_queue_depth,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// A JSON object of every counter plus the given extra numeric fields.
    pub fn to_json(&self, extra: &[(&str, f64)]) -> String {
        let mut out = String::from("{\n");
        let mut first = true;
        let mut field = |name: &str, value: String| {
            let sep = if first { "" } else { ",\n" };
            first = false;
            let _ = write!(out, "{sep}  \"{name}\": {value}");
        };
        for (name, value) in extra {
            field(name, format_number(*value));
        }
        for (name, value) in self.snapshot() {
            field(name, value.to_string());
        }
        out.push_str("\n}\n");
        out
    }
}

/// A number as JSON (and the Prometheus text format) writes it: whole numbers without a
/// fraction, others with six decimals, non-finite ones as `null`.
pub fn format_number(value: f64) -> String {
    if value.is_finite() {
        if value.fract() == 0.0 && value.abs() < 1e15 {
            format!("{}", value as i64)
        } else {
            format!("{value:.6}")
        }
    } else {
        "null".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lists_every_counter_and_extras() {
        let stats = Stats::default();
        Stats::add(&stats.samples, 42);
        Stats::inc(&stats.pids_seen);
        let json = stats.to_json(&[("duration_seconds", 1.5), ("frequency_hz", 99.0)]);
        assert!(json.starts_with("{\n  \"duration_seconds\": 1.500000,\n  \"frequency_hz\": 99,"));
        assert!(json.contains("\"samples\": 42,"));
        assert!(json.contains("\"pids_seen\": 1,"));
        assert!(json.trim_end().ends_with('}'));
        assert_eq!(json.matches(':').count(), stats.snapshot().len() + 2);
    }
}
