//! The BPF sampler: loads `bpf/sampler.bpf.c`, fills the PID filter, attaches the process hooks
//! and, on `start`, one `cpu-clock` perf event per online CPU.

use std::io;

use crate::layout::{consts, PythonProc, SAMPLER_BSS_SIZE, SAMPLER_RODATA_SIZE};
use crate::stats::Stats;
use crate::sys::bpf::{online_cpus, open_cpu_clock, Link, LoadedObject, Map, OpenObject};

static SAMPLER_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sampler.bpf.o"));

/// `pid_filter` values (see `bpf/profiler.h`).
const FILTER_PROFILE: u8 = consts::FILTER_PROFILE as u8;
const FILTER_FOLLOW_CHILDREN: u8 = consts::FILTER_FOLLOW_CHILDREN as u8;

/// Which processes to sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every process on the machine.
    System,
    /// These PIDs and every process they fork from now on.
    Pids(Vec<u32>),
}

/// A loaded sampler. Dropping it detaches everything.
pub struct Sampler {
    // Field order is drop order: links first, then the object.
    perf_links: Vec<Link>,
    _hook_links: Vec<Link>,
    pid_filter: Map,
    counters: Map,
    events: Map,
    object: LoadedObject,
}

impl Sampler {
    /// Opens, configures and loads the BPF programs and attaches the process hooks. Sampling
    /// itself starts with `start`.
    pub fn load(target: &Target) -> io::Result<Self> {
        let mut open = OpenObject::open("sampler", SAMPLER_OBJECT)?;
        let rodata = open.rodata_mut()?;
        if rodata.len() != SAMPLER_RODATA_SIZE {
            return Err(io::Error::other(format!(
                "sampler .rodata is {} bytes, expected {SAMPLER_RODATA_SIZE}: layout mismatch",
                rodata.len()
            )));
        }
        let filter = u32::from(matches!(target, Target::Pids(_)));
        rodata.copy_from_slice(&filter.to_ne_bytes());
        open.set_max_entries("pid_mappings", pid_mappings_capacity())?;
        open.set_max_entries("unwind_buckets", unwind_buckets_capacity())?;
        open.set_max_entries("stack_scratch", crate::sys::bpf::possible_cpus()? as u32)?;
        let object = open.load()?;
        let hooks = vec![
            object.attach("on_fork")?,
            object.attach("on_exec")?,
            object.attach("on_exit")?,
        ];
        let sampler = Self {
            perf_links: Vec::new(),
            _hook_links: hooks,
            pid_filter: object.map("pid_filter")?,
            counters: object.map("counters")?,
            events: object.map("events")?,
            object,
        };
        if let Target::Pids(pids) = target {
            for &pid in pids {
                sampler.set_filter(pid, FILTER_PROFILE)?;
            }
        }
        Ok(sampler)
    }

    fn set_filter(&self, pid: u32, value: u8) -> io::Result<()> {
        self.pid_filter.update(&pid.to_ne_bytes(), &[value], 0)
    }

    /// Profiles the children `pid` forks from now on, but not `pid` itself (the profiler uses
    /// this on itself to catch the command it starts from its very first instruction).
    pub fn follow_children_of(&self, pid: u32) -> io::Result<()> {
        self.set_filter(pid, FILTER_FOLLOW_CHILDREN)
    }

    /// Adds a PID to the filter (only meaningful for `Target::Pids`).
    pub fn profile_pid(&self, pid: u32) -> io::Result<()> {
        self.set_filter(pid, FILTER_PROFILE)
    }

    pub fn unfollow(&self, pid: u32) -> io::Result<()> {
        self.pid_filter.delete(&pid.to_ne_bytes()).map(|_| ())
    }

    /// The perf buffer maps (samples, reports), for the poller.
    pub fn events(&self) -> io::Result<(Map, Map)> {
        Ok((
            self.object.map(self.events.name())?,
            self.object.map("reports")?,
        ))
    }

    /// The per-PID mappings trie, for the maintainer (its only writer).
    pub fn pid_mappings(&self) -> io::Result<Map> {
        self.object.map("pid_mappings")
    }

    /// The unwind tables array, for the maintainer's table store.
    pub fn unwind_buckets(&self) -> io::Result<Map> {
        self.object.map("unwind_buckets")
    }

    /// The files first sight can name, for the maintainer's table store (its only writer).
    pub fn file_tables(&self) -> io::Result<Map> {
        self.object.map("file_tables")
    }

    /// The handle through which the maintainer drops every CPU's mapping cache.
    pub fn cache_invalidator(&self) -> io::Result<MappingCaches> {
        let bss = self.object.section_map(".bss")?;
        if bss.value_size() != SAMPLER_BSS_SIZE {
            return Err(io::Error::other(format!(
                "sampler .bss is {} bytes, expected {SAMPLER_BSS_SIZE}: layout mismatch",
                bss.value_size()
            )));
        }
        Ok(MappingCaches { bss, generation: 0 })
    }

    /// Attaches the sampler to a `cpu-clock` event on every online CPU.
    pub fn start(&mut self, frequency_hz: u64) -> io::Result<()> {
        for cpu in online_cpus()? {
            let event = open_cpu_clock(cpu, frequency_hz).map_err(|e| {
                io::Error::new(e.kind(), format!("perf_event_open on CPU {cpu}: {e}"))
            })?;
            self.perf_links
                .push(self.object.attach_perf_event("on_sample", event)?);
        }
        Ok(())
    }

    /// Detaches the perf events: no new samples after this returns.
    pub fn stop(&mut self) {
        self.perf_links.clear();
    }

    /// Copies the BPF-side counters into `stats`.
    pub fn read_counters(&self, stats: &Stats) -> io::Result<()> {
        let read = |index: u64| self.counters.sum_percpu_u64(&(index as u32).to_ne_bytes());
        let set = |counter: &std::sync::atomic::AtomicU64, value: u64| {
            counter.store(value, std::sync::atomic::Ordering::Relaxed)
        };
        set(&stats.bpf_samples, read(consts::COUNTER_SAMPLES)?);
        set(&stats.bpf_filtered, read(consts::COUNTER_FILTERED)?);
        set(
            &stats.samples_send_failed,
            read(consts::COUNTER_SEND_FAILED)?,
        );
        set(
            &stats.kernel_stack_errors,
            read(consts::COUNTER_KSTACK_FAILED)?,
        );
        set(
            &stats.user_stack_errors,
            read(consts::COUNTER_USTACK_FAILED)?,
        );
        set(
            &stats.process_events_lost,
            read(consts::COUNTER_EVENT_SEND_FAILED)?,
        );
        set(&stats.pid_filter_full, read(consts::COUNTER_FILTER_FULL)?);
        set(&stats.exits_quiet, read(consts::COUNTER_EXITS_QUIET)?);
        set(&stats.execs_quiet, read(consts::COUNTER_EXECS_QUIET)?);
        set(&stats.exit_walks, read(consts::COUNTER_EXIT_WALKS)?);
        set(&stats.vmas_learned, read(consts::COUNTER_VMAS_LEARNED)?);
        set(
            &stats.exit_vmas_learned,
            read(consts::COUNTER_EXIT_VMAS_LEARNED)?,
        );
        set(&stats.mappings_sent, read(consts::COUNTER_MAPPINGS_SENT)?);
        set(
            &stats.exit_stacks_used,
            read(consts::COUNTER_EXIT_STACKS_USED)?,
        );
        for (index, counter) in [
            (consts::COUNTER_PYTHON_SAMPLES, &stats.python_samples),
            (consts::COUNTER_PYTHON_FRAMES, &stats.python_frames),
            (consts::COUNTER_PYTHON_NO_THREAD, &stats.python_no_thread),
            (consts::COUNTER_PYTHON_READ_FAULT, &stats.python_read_fault),
            (consts::COUNTER_PYTHON_MISMATCH, &stats.python_mismatch),
        ] {
            set(counter, read(index)?);
        }
        set(
            &stats.frames_resolved_in_bpf,
            read(consts::COUNTER_FRAMES_RESOLVED)?,
        );
        set(&stats.frames_cache_hits, read(consts::COUNTER_CACHE_HITS)?);
        set(
            &stats.frames_unknown_pid,
            read(consts::COUNTER_FRAMES_NO_PID)?,
        );
        set(
            &stats.frames_unknown_mapping,
            read(consts::COUNTER_FRAMES_NO_MAPPING)?,
        );
        set(&stats.vma_reports, read(consts::COUNTER_VMA_REPORTS)?);
        set(
            &stats.frames_first_sight,
            read(consts::COUNTER_FRAMES_FIRST_SIGHT)?,
        );
        set(
            &stats.first_sight_unknown_file,
            read(consts::COUNTER_FIRST_SIGHT_UNKNOWN_FILE)?,
        );
        set(
            &stats.first_sight_slots_full,
            read(consts::COUNTER_VMA_SLOTS_FULL)?,
        );
        set(&stats.stacks_copied, read(consts::COUNTER_STACKS_COPIED)?);
        set(
            &stats.stack_copy_failed,
            read(consts::COUNTER_STACK_COPY_FAILED)?,
        );
        set(&stats.user_stacks_stale, read(consts::COUNTER_USER_STALE)?);
        set(
            &stats.frames_unwound_by_table,
            read(consts::COUNTER_TABLE_FRAMES)?,
        );
        set(
            &stats.frames_unwound_by_fp,
            read(consts::COUNTER_FP_FRAMES)?,
        );
        let outcomes = [
            (consts::UNWIND_DONE_OUTERMOST, &stats.unwind_outermost),
            (consts::UNWIND_DONE_NO_MAPPING, &stats.unwind_no_mapping),
            (consts::UNWIND_DONE_NO_INFO, &stats.unwind_no_info),
            (consts::UNWIND_DONE_BAD_CFA, &stats.unwind_bad_cfa),
            (consts::UNWIND_DONE_READ_FAULT, &stats.unwind_read_fault),
            (consts::UNWIND_DONE_DEPTH, &stats.unwind_depth_limit),
            (consts::UNWIND_DONE_UNSUPPORTED, &stats.unwind_unsupported),
            (consts::UNWIND_DONE_FP_END, &stats.unwind_fp_end),
        ];
        for (outcome, counter) in outcomes {
            set(counter, read(consts::COUNTER_UNWIND_BASE + outcome)?);
        }
        Ok(())
    }
}

/// Total RAM in KiB.
fn ram_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(1 << 20)
}

/// Capacity of `pid_mappings`: about one entry per 16 KiB of RAM, between 64 Ki and 1 Mi. The
/// trie allocates on demand (BPF_F_NO_PREALLOC), so this is a cap, not a reservation.
fn pid_mappings_capacity() -> u32 {
    (ram_kib() / 16).clamp(1 << 16, 1 << 20) as u32
}

/// Capacity of `unwind_buckets` (256 bytes each, allocated up front): 1/256 of RAM, between
/// 4 MiB and 128 MiB, i.e. tables for roughly 16 to 512 MiB of executable text. A rustc run
/// alone maps ~300 MiB of text (librustc_driver and libLLVM): at 1/512 of RAM on a 24 GiB
/// machine one of its two libraries found no room.
fn unwind_buckets_capacity() -> u32 {
    (ram_kib() * 1024 / 256 / 256).clamp(1 << 14, 1 << 19) as u32
}

/// Where the maintainer tells the sampler to drop its per-CPU mapping caches.
pub trait CacheInvalidator {
    fn invalidate(&mut self);
}

/// Bumps the sampler's `mappings_generation`, which every CPU's cache compares against.
pub struct MappingCaches {
    bss: Map,
    generation: u64,
}

impl CacheInvalidator for MappingCaches {
    fn invalidate(&mut self) {
        self.generation += 1;
        if let Err(err) = self
            .bss
            .update(&0u32.to_ne_bytes(), &self.generation.to_ne_bytes(), 0)
        {
            crate::log::warn(&format!(
                "cannot invalidate the sampler's mapping caches: {err}"
            ));
        }
    }
}

/// Where the maintainer marks CPython processes for the sampler's Python walk.
pub trait PythonMarks {
    /// Marks (or re-marks) `pid`.
    fn mark(&mut self, pid: u32, value: &PythonProc) -> io::Result<()>;
    /// Removes `pid`'s mark, if it has one.
    fn unmark(&mut self, pid: u32) -> io::Result<()>;
}

/// The sampler's `python_procs` and `python_enabled` (the number of marks, which lets samples
/// skip the hash lookup while there are none).
pub struct PythonMaps {
    procs: Map,
    enabled: Map,
    marked: std::collections::HashSet<u32>,
}

impl Sampler {
    /// The maps of the Python walk, for the maintainer (their only writer).
    pub fn python_maps(&self) -> io::Result<PythonMaps> {
        Ok(PythonMaps {
            procs: self.object.map("python_procs")?,
            enabled: self.object.map("python_enabled")?,
            marked: Default::default(),
        })
    }
}

impl PythonMaps {
    fn publish_count(&self) -> io::Result<()> {
        let count = self.marked.len() as u32;
        self.enabled
            .update(&0u32.to_ne_bytes(), &count.to_ne_bytes(), 0)
    }
}

impl PythonMarks for PythonMaps {
    fn mark(&mut self, pid: u32, value: &PythonProc) -> io::Result<()> {
        self.procs
            .update(&pid.to_ne_bytes(), &value.to_bytes(), 0)?;
        self.marked.insert(pid);
        self.publish_count()
    }

    fn unmark(&mut self, pid: u32) -> io::Result<()> {
        if !self.marked.remove(&pid) {
            return Ok(());
        }
        self.procs.delete(&pid.to_ne_bytes())?;
        self.publish_count()
    }
}
