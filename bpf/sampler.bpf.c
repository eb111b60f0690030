// SPDX-License-Identifier: GPL-2.0
/*
 * The sampler: a perf_event program run on every CPU at the sampling frequency, plus the
 * process hooks (fork extends the PID filter; exec and whole-process exit are reported).
 *
 * Every user frame is resolved to (file_id, file offset) through the pid_mappings trie, with a
 * per-CPU cache of recent mappings in front of it, so symbolization never needs the process to
 * still exist. What the trie cannot resolve is reported (unknown PID, unknown mapping; rate
 * limited) and sent as a raw address, together with the kernel's VMA for it, so user space can
 * still attribute short-lived processes.
 *
 * User stacks are walked here, frame by frame, with the unwind tables user space built from
 * each file's .eh_frame (in unwind_buckets, found through the mapping entry), and with frame
 * pointers where a file has no table. No stack is copied: each frame costs a mapping lookup
 * (usually a per-CPU cache hit), a bucket search inside one 256-byte bucket, and one or two
 * 8-byte reads of the stack.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "profiler.h"
#include "table_search.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by user space before load. */
const volatile __u32 filter_pids = 0;

/* Bumped by user space whenever it removes entries of a live process from pid_mappings, so
 * every CPU drops its cached mappings. */
volatile __u64 mappings_generation = 0;

/* Samples, and the VMA reports that must reach user space before the samples needing them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

/* Reports, execs and exits: rare, and the maintainer must see them at once (a new process's
 * stacks are only walked fully once its mappings are in pid_mappings), so user space is woken
 * for each one, while samples are batched. */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} reports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trace);
} scratch SEC(".maps");

/* Thread group ids being profiled when filter_pids is set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FILTER_PIDS);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 18); /* resized by user space from the machine */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pid_mapping_key);
	__type(value, struct pid_mapping_value);
} pid_mappings SEC(".maps");

/* The files user space registered, by inode (see profiler.h); user space writes it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct file_table_key);
	__type(value, struct file_table_value);
} file_tables SEC(".maps");

/* Each process's first-sight list (struct proc_vmas in profiler.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct proc_vmas);
} proc_vmas SEC(".maps");

/* Room to build a new proc_vmas value (too big for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proc_vmas);
} proc_vmas_scratch SEC(".maps");


/* What was reported when: an unknown PID or mapping (what = report kind), or the VMA around a
 * 2 MiB region of an address space (what = REPORTED_REGION | address >> 21, gen = exec_gen).
 * Keyed by the process's identity (PID and start time): a process that gets a just-freed PID
 * is reported at once, not held back by its predecessor's reports. */
struct report_key {
	__u32 pid;
	__u32 what;
	__u64 gen;
	__u64 start_ns;
};

#define REPORTED_REGION (1U << 31)

struct report_value {
	__u64 time;
	__u64 unmapped; /* a region: the kernel said the address is in no VMA */
	/* A region: the VMA the kernel named. Another VMA of the region (libc's code next to the
	 * data mapping a frame-pointer walk strayed into) is not held back by it. */
	__u64 vma_start;
	__u64 vma_end;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct report_key);
	__type(value, struct report_value);
} reported SEC(".maps");

/* What a frame's address resolved to. */
struct mapping_view {
	__u64 bias;
	struct table_ref table; /* the file's unwind table */
	__u32 file_id;
	__u32 kind; /* RESOLVED_* */
	__u32 pending; /* the file's table is being built */
	__u32 _pad;
};

#define RESOLVED_NO_PID 0
#define RESOLVED_NO_MAPPING 1
#define RESOLVED_ANON 2
#define RESOLVED_FILE 3

struct cache_slot {
	__u64 start;
	__u64 end;
	__u64 exec_gen;
	__u64 generation;
	__u32 pid;
	__u32 _pad;
	struct mapping_view view;
};

struct mapping_cache {
	struct cache_slot slots[MAPPING_CACHE_SLOTS];
	__u32 next;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mapping_cache);
} mapping_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &which);
	if (value)
		*value += 1;
}

static __always_inline void add(__u32 which, __u64 n)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &which);
	if (value && n)
		*value += n;
}

static __always_inline bool wanted(__u32 tgid)
{
	if (!filter_pids)
		return true;
	__u8 *value = bpf_map_lookup_elem(&pid_filter, &tgid);
	return value && *value == FILTER_PROFILE;
}

/* The report of `key` made less than REPORT_INTERVAL_NS ago, if any. */
static __always_inline struct report_value *recent_report(struct report_key *key, __u64 now)
{
	struct report_value *last = bpf_map_lookup_elem(&reported, key);
	return last && now - last->time < REPORT_INTERVAL_NS ? last : NULL;
}

/* Processes user space has heard about from a sample (a report of an unknown PID or mapping,
 * or a VMA), by PID, with their start time. Only their exits are sent: user space holds
 * nothing for any other process, and under churn most processes are never sampled. An entry
 * lost to the LRU costs only an exit found later by the maintainer's sweep. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, __u64);
} tracked SEC(".maps");

/* A report sent (of an unknown PID or mapping). */
static __always_inline void mark_reported(struct report_key *key, __u64 now)
{
	struct report_value value = { .time = now };
	bpf_map_update_elem(&reported, key, &value, BPF_ANY);
	bpf_map_update_elem(&tracked, &key->pid, &key->start_ns, BPF_ANY);
}

/* A region asked about: what the kernel said, and which VMA it named. */
static __always_inline void mark_asked(struct report_key *key, __u64 now, bool unmapped,
				       __u64 vma_start, __u64 vma_end)
{
	struct report_value value = {
		.time = now,
		.unmapped = unmapped,
		.vma_start = vma_start,
		.vma_end = vma_end,
	};
	bpf_map_update_elem(&reported, key, &value, BPF_ANY);
	bpf_map_update_elem(&tracked, &key->pid, &key->start_ns, BPF_ANY);
}

/* ---- Python (bpf/python.h) ---- */
#include "python.h"
/* ---- end Python ---- */

/* The walk of one user stack, shared with the bpf_loop callback. */
struct unwind_state {
	__u64 pc;
	__u64 sp;
	__u64 bp;
	__u64 exec_gen;
	__u64 generation;
	__u64 start_ns;    /* the process's identity, with pid */
	__u64 mm;          /* the address space, to check the first-sight list against */
	__u32 pid;
	__u32 n_kernel;
	__u32 n_user;      /* frames recorded */
	__u32 outcome;     /* UNWIND_WALKING until the walk ends */
	__u32 pc_exact;    /* pc is where execution is, not a return address (leaf, signal) */
	__u32 report_kind; /* RECORD_UNKNOWN_PID / RECORD_UNKNOWN_MAPPING, or 0 */
	__u32 n_unknown;
	__u32 leaf_unknown; /* the innermost user frame is unresolved (it is unknown[0]) */
	__u32 copy_stack;   /* the walk stops at a file user space has no table for yet */
	/* Per-frame counters, added to `counters` once per sample rather than once per frame. */
	__u32 cache_hits;
	__u32 resolved;
	__u32 table_frames;
	__u32 fp_frames;
	__u32 stopped_unknown; /* the walk stopped at an address nothing resolved: it can resume */
	__u64 report_addr;
	__u64 new_file;     /* inode of the first mapped file user space has not registered */
	__u64 unknown[MAX_VMA_LOOKUPS];
	struct python_walk py; /* Python (bpf/python.h) */
};

static __always_inline void note_unknown(struct unwind_state *st, __u32 kind, __u64 pc, bool leaf)
{
	/* An unknown PID outranks an unknown mapping: it is the one to report. */
	if (st->report_kind != RECORD_UNKNOWN_PID) {
		st->report_kind = kind;
		st->report_addr = pc;
	}
	if (leaf)
		st->leaf_unknown = 1;
	/* Stacks run through few VMAs: keep one address per 2 MiB region, which is most often
	 * one per VMA, so the lookups cover as many VMAs as possible. */
	__u32 n = st->n_unknown;
	for (int j = 0; j < MAX_VMA_LOOKUPS; j++) {
		if (j < n && (st->unknown[j] >> 21) == (pc >> 21))
			return;
	}
	if (n < MAX_VMA_LOOKUPS) {
		st->unknown[n] = pc;
		st->n_unknown = n + 1;
	}
}

/*
 * First sight: resolves `addr` of a process (or mapping) user space has not synced yet, from the
 * first-sight list of the process's executable file mappings and the file's entry in
 * file_tables. Returns 0 and fills `view` (RESOLVED_FILE) and `vma` on success.
 *
 * A global function: the verifier checks it once, on its own, instead of once per path of
 * every caller.
 */
__noinline int first_sight(__u32 pid, __u64 mm, __u64 addr, struct proc_vma *vma,
			   struct mapping_view *view)
{
	if (!vma || !view)
		return -1;
	struct proc_vmas *list = bpf_map_lookup_elem(&proc_vmas, &pid);
	if (!list || list->mm != mm)
		return -1;
	__u32 n = list->n;
	bool hit = false;
	/* Newest first: a library mapped over an earlier one wins. Unrolled, and copying the
	 * entry before the break, so every path leaves the loop in the same state. */
#pragma unroll
	for (int i = PROC_VMA_SLOTS - 1; i >= 0; i--) {
		if (i < n && list->vma[i].start <= addr && addr < list->vma[i].end) {
			*vma = list->vma[i];
			hit = true;
			break;
		}
	}
	if (!hit)
		return -1;
	struct file_table_key key = { .dev = vma->dev, .inode = vma->inode };
	struct file_table_value *file = bpf_map_lookup_elem(&file_tables, &key);
	if (!file) {
		count(COUNTER_FIRST_SIGHT_UNKNOWN_FILE);
		return -2; /* its table does not exist yet */
	}
	view->kind = RESOLVED_FILE;
	view->bias = vma->start - vma->offset;
	view->file_id = file->file_id;
	view->table.first = file->table_first;
	view->table.direct = file->table_direct;
	view->table.base = file->table_base;
	view->pending = file->flags & MAPPING_TABLE_PENDING;
	count(COUNTER_FRAMES_FIRST_SIGHT);
	return 0;
}

/* Finds the mapping of `addr` in the process: the per-CPU cache, else the trie, else what the
 * first-sight list holds. */
static __always_inline void resolve(struct unwind_state *st, struct mapping_cache *cache, __u64 addr,
				    struct mapping_view *view)
{
	for (int s = 0; s < MAPPING_CACHE_SLOTS; s++) {
		struct cache_slot *slot = &cache->slots[s];
		if (slot->pid == st->pid && slot->start <= addr && addr < slot->end &&
		    slot->exec_gen == st->exec_gen && slot->generation == st->generation) {
			*view = slot->view;
			st->cache_hits++;
			return;
		}
	}
	struct pid_mapping_key key = {
		.prefixlen = PID_MAPPING_KEY_BITS,
		.pid_be = bpf_htonl(st->pid),
		.addr_be = bpf_cpu_to_be64(addr),
	};
	struct pid_mapping_value *value = bpf_map_lookup_elem(&pid_mappings, &key);
	if (!value || value->exec_gen != st->exec_gen || (value->flags & MAPPING_MARKER)) {
		view->kind = value && value->exec_gen == st->exec_gen ? RESOLVED_NO_MAPPING
								      : RESOLVED_NO_PID;
		struct proc_vma vma;
		int found = first_sight(st->pid, st->mm, addr, &vma, view);
		if (found == -2) {
			st->copy_stack = 1;
			if (!st->new_file)
				st->new_file = vma.inode;
		}
		if (found != 0)
			return;
		/* Remember it like a trie entry: the next frames in this file are cache hits. */
		__u32 n = cache->next % MAPPING_CACHE_SLOTS;
		struct cache_slot *slot = &cache->slots[n];
		slot->pid = st->pid;
		slot->start = vma.start;
		slot->end = vma.end;
		slot->exec_gen = st->exec_gen;
		slot->generation = st->generation;
		slot->view = *view;
		cache->next = n + 1;
		return;
	}
	view->kind = value->flags & MAPPING_ANON ? RESOLVED_ANON : RESOLVED_FILE;
	view->bias = value->bias;
	view->file_id = value->file_id;
	view->table.first = value->table_first;
	view->table.direct = value->table_direct;
	view->table.base = value->table_base;
	view->pending = value->flags & MAPPING_TABLE_PENDING;

	/* Cache the whole mapping (one trie lookup per library per CPU), or at least the block. */
	__u64 start = value->map_start, end = value->map_end;
	__u32 prefix_bits = PID_MAPPING_KEY_BITS - value->prefixlen;
	if (!(start <= addr && addr < end) && prefix_bits < 64) {
		start = value->prefix_addr;
		end = value->prefix_addr + (1ULL << prefix_bits);
	}
	if (start <= addr && addr < end) {
		__u32 n = cache->next % MAPPING_CACHE_SLOTS;
		struct cache_slot *slot = &cache->slots[n];
		slot->pid = st->pid;
		slot->start = start;
		slot->end = end;
		slot->exec_gen = value->exec_gen;
		slot->generation = st->generation;
		slot->view = *view;
		cache->next = n + 1;
	}
}

static __always_inline bool read_user(__u64 *out, __u64 addr)
{
	return bpf_probe_read_user(out, sizeof(*out), (void *)addr) == 0;
}

/* Steps to the caller through frame pointers: [bp] is the caller's bp, [bp + 8] the return
 * address. */
static __always_inline void step_frame_pointer(struct unwind_state *st, __u32 no_info_outcome)
{
	__u64 bp = st->bp;
	if (bp == 0) {
		st->outcome = UNWIND_DONE_FP_END;
		return;
	}
	if (bp < st->sp || (bp & 7)) {
		st->outcome = no_info_outcome;
		return;
	}
	__u64 next_bp, ra;
	if (!read_user(&next_bp, bp) || !read_user(&ra, bp + 8)) {
		st->outcome = UNWIND_DONE_READ_FAULT;
		return;
	}
	st->fp_frames++;
	st->sp = bp + 16;
	st->bp = next_bp;
	st->pc = ra;
	st->pc_exact = 0;
	if (ra == 0)
		st->outcome = UNWIND_DONE_OUTERMOST;
}

/* Steps to the caller with an unwind rule. */
static __always_inline void step_rule(struct unwind_state *st, struct unwind_rule *rule, __u64 off)
{
	__u8 cfa_kind = rule->kind & 0xf, bp_kind = (rule->kind >> 4) & 3;
	__s64 lo = (__s8)(rule->cfa & 0xff), hi = (__s8)(rule->cfa >> 8);
	__u64 cfa, base;
	switch (cfa_kind) {
	case UNWIND_RSP:
		cfa = st->sp + (__s64)rule->cfa * 8;
		break;
	case UNWIND_RBP:
		cfa = st->bp + (__s64)rule->cfa * 8;
		break;
	case UNWIND_RSP_WIDE:
		cfa = st->sp + (((__u64)(rule->kind >> 6) << 16) | (__u16)rule->cfa) * 8;
		break;
	case UNWIND_PLT:
		cfa = st->sp + lo * 8 + ((off & 15) >= (__u8)hi ? 8 : 0);
		break;
	case UNWIND_DEREF_RSP:
	case UNWIND_DEREF_RBP:
		base = cfa_kind == UNWIND_DEREF_RSP ? st->sp : st->bp;
		if (!read_user(&cfa, base + lo * 8)) {
			st->outcome = UNWIND_DONE_READ_FAULT;
			return;
		}
		cfa += hi * 8;
		break;
	case UNWIND_OUTERMOST:
		st->outcome = UNWIND_DONE_OUTERMOST;
		return;
	case UNWIND_SIGNAL: {
		__u64 rip, rsp, rbp;
		if (!read_user(&rip, st->sp + SIGFRAME_RIP) || !read_user(&rsp, st->sp + SIGFRAME_RSP) ||
		    !read_user(&rbp, st->sp + SIGFRAME_RBP)) {
			st->outcome = UNWIND_DONE_READ_FAULT;
			return;
		}
		st->pc = rip;
		st->sp = rsp;
		st->bp = rbp;
		st->pc_exact = 1; /* the interrupted instruction itself */
		st->table_frames++;
		return;
	}
	case UNWIND_NO_INFO:
		step_frame_pointer(st, UNWIND_DONE_NO_INFO);
		return;
	default:
		st->outcome = UNWIND_DONE_UNSUPPORTED;
		return;
	}
	if (cfa <= st->sp) {
		st->outcome = UNWIND_DONE_BAD_CFA;
		return;
	}
	__u64 ra, bp = st->bp;
	if (!read_user(&ra, cfa - 8)) {
		st->outcome = UNWIND_DONE_READ_FAULT;
		return;
	}
	if (bp_kind == UNWIND_RBP_AT_CFA || bp_kind == UNWIND_RBP_AT_RBP) {
		__u64 slot = (bp_kind == UNWIND_RBP_AT_CFA ? cfa : st->bp) + (__s64)rule->rbp * 8;
		if (!read_user(&bp, slot)) {
			st->outcome = UNWIND_DONE_READ_FAULT;
			return;
		}
	} else if (bp_kind == UNWIND_RBP_UNKNOWN) {
		bp = 0;
	}
	st->table_frames++;
	st->sp = cfa;
	st->bp = bp;
	st->pc = ra;
	st->pc_exact = 0;
	if (ra == 0)
		st->outcome = UNWIND_DONE_OUTERMOST;
}

/*
 * Records the next user frame and steps to its caller; 1 ends the walk. A global function: the
 * verifier checks it once, on its own, with nothing known of the state it gets, instead of
 * re-walking it for every state the loop around it could be in (which made loading the
 * sampler take about a second).
 */
__noinline int unwind_step(struct unwind_state *st, struct trace *t, struct mapping_cache *cache)
{
	if (!st || !t || !cache || st->outcome != UNWIND_WALKING)
		return 1;
	/* The frame to fill is the next one (a walk resumed after learn_vma goes on from there).
	 * Hide idx and n_kernel from the compiler and mask them: the verifier then knows every
	 * index is in bounds (checks the compiler made on copies do not carry over). */
	__u32 idx = st->n_user, n_kernel = st->n_kernel;
	barrier_var(idx);
	barrier_var(n_kernel);
	idx &= USER_FRAME_MASK;
	__u32 base = (n_kernel & KERNEL_FRAME_MASK) + 2 * idx;

	__u64 pc = st->pc;
	/* A return address points after the call: look up the call itself. */
	__u64 lookup = st->pc_exact ? pc : pc - 1;
	/* ---- Python (bpf/python.h): an eval loop's interpreter frames come before it ---- */
	if (st->py.eval_start && python_frame(&st->py, t, base, lookup, st->sp)) {
		st->n_user = idx + 1;
		if (idx >= MAX_USER_FRAMES - 1) {
			st->outcome = UNWIND_DONE_DEPTH;
			return 1;
		}
		return 0;
	}
	/* ---- end Python ---- */
	struct mapping_view view = {};
	resolve(st, cache, lookup, &view);

	t->frames[base] = pc;
	st->n_user = idx + 1;
	switch (view.kind) {
	case RESOLVED_FILE:
		t->frames[base] = pc - view.bias;
		t->frames[base + 1] = view.file_id | ((__u64)FRAME_RESOLVED << 32);
		st->resolved++;
		break;
	case RESOLVED_ANON:
		t->frames[base + 1] = (__u64)FRAME_ANON << 32;
		break;
	case RESOLVED_NO_MAPPING:
		t->frames[base + 1] = (__u64)FRAME_NO_MAPPING << 32;
		note_unknown(st, RECORD_UNKNOWN_MAPPING, pc, idx == 0);
		count(COUNTER_FRAMES_NO_MAPPING);
		break;
	default:
		t->frames[base + 1] = (__u64)FRAME_NO_PID << 32;
		note_unknown(st, RECORD_UNKNOWN_PID, pc, idx == 0);
		count(COUNTER_FRAMES_NO_PID);
		break;
	}

	if (idx >= MAX_USER_FRAMES - 1) {
		st->outcome = UNWIND_DONE_DEPTH;
		return 1;
	}
	if (view.kind == RESOLVED_FILE && view.pending) {
		/* Its table is on the way: stop rather than guess, and let user space finish. */
		st->copy_stack = 1;
		st->outcome = UNWIND_DONE_NO_MAPPING;
		return 1;
	}
	if (view.kind == RESOLVED_FILE && view.table.direct) {
		struct unwind_rule *rule = find_rule(&view.table, lookup - view.bias, NULL);
		if (rule) {
			step_rule(st, rule, lookup - view.bias);
			return 0;
		}
	}
	if (view.kind == RESOLVED_NO_PID || view.kind == RESOLVED_NO_MAPPING) {
		/* Nothing says how this code keeps its frames: following rbp here mostly yields
		 * invented frames. Stop; the mapping is reported and the next samples walk on. */
		st->outcome = UNWIND_DONE_NO_MAPPING;
		st->stopped_unknown = !st->copy_stack;
		return 1;
	}
	/* No unwind table (or none for this address): frame pointers, as JITs and code built
	 * with -fno-omit-frame-pointer keep them. */
	step_frame_pointer(st, view.kind == RESOLVED_FILE ? UNWIND_DONE_NO_INFO : UNWIND_DONE_NO_MAPPING);
	return 0;
}

/* One frame, recorded in the per-CPU trace of `traces`, with the per-CPU cache of `caches`. */
static __always_inline long unwind_with(struct unwind_state *st, void *traces, void *caches)
{
	__u32 zero = 0;
	struct trace *t = bpf_map_lookup_elem(traces, &zero);
	struct mapping_cache *cache = bpf_map_lookup_elem(caches, &zero);
	if (!t || !cache)
		return 1;
	return unwind_step(st, t, cache) ? 1 : 0;
}

/* The bpf_loop callback of a sample's walk: one frame. */
static long unwind_frame(__u32 i, struct unwind_state *st)
{
	return unwind_with(st, &scratch, &mapping_cache);
}

/*
 * Exit stacks. A process's last thread calls exit_group(2), and do_exit() then tears down its
 * address space (exit_mm, then exit_mmap): for a compiler with a big heap that is a good part of
 * a millisecond, and the samples taken meanwhile find the user registers as exit_group left them
 * but no user memory to walk (task->mm is already NULL). So on_exit, which runs before exit_mm
 * on current kernels, walks the user stack once, for processes user space has heard of, and
 * the samples taken during the teardown get that stack. On kernels whose tracepoint comes after
 * exit_mm, on_exit finds no mm and walks nothing.
 */
#define EXIT_STACK_FRAMES 64
/* Processes user space never heard of get an exit walk from this size of address space on
 * (16 MiB: a shell or coreutils program maps 2-4 MiB, a compiler tens to hundreds). */
#define EXIT_WALK_MIN_PAGES 4096

struct exit_stack {
	__u64 start_ns; /* the process's identity, with the key */
	__u32 n_user;
	__u32 outcome;
	__u64 frames[2 * EXIT_STACK_FRAMES];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct exit_stack);
} exit_stacks SEC(".maps");

/* The exit walk's own room: a sample can interrupt it, and must not find its trace changed. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trace);
} exit_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mapping_cache);
} exit_mapping_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exit_stack);
} exit_stack_scratch SEC(".maps");

static __always_inline __u64 process_start(struct task_struct *task);

/* Whether `task` is a process on its way out whose exit stack on_exit took: on_exit also drops
 * it from pid_filter, and its teardown is still its own CPU time. */
static __always_inline bool exiting_with_stack(struct task_struct *task, __u32 tgid)
{
	if (!(task->flags & PF_EXITING))
		return false;
	struct exit_stack *s = bpf_map_lookup_elem(&exit_stacks, &tgid);
	return s && s->start_ns == process_start(task);
}

/* The bpf_loop callback of an exit walk: one frame, in the exit walk's own room. */
static long unwind_exit_frame(__u32 i, struct unwind_state *st)
{
	return unwind_with(st, &exit_scratch, &exit_mapping_cache);
}

/* A sample of a process whose address space is gone: its exit stack, if on_exit took one.
 * Returns whether `st` and `t` now hold it. */
static __always_inline bool use_exit_stack(struct unwind_state *st, struct trace *t)
{
	struct exit_stack *s = bpf_map_lookup_elem(&exit_stacks, &st->pid);
	if (!s || s->start_ns != st->start_ns)
		return false;
	__u32 n = s->n_user;
	if (n > EXIT_STACK_FRAMES)
		n = EXIT_STACK_FRAMES;
	__u32 base = st->n_kernel & KERNEL_FRAME_MASK;
	if (bpf_probe_read_kernel(&t->frames[base], n * 2 * sizeof(__u64), s->frames) != 0)
		return false;
	st->n_user = n;
	st->outcome = s->outcome;
	count(COUNTER_EXIT_STACKS_USED);
	return true;
}

struct vma_info {
	__u64 start;
	__u64 end;
	__u64 pgoff;
	__u64 inode;
	__u64 flags;
	__u32 dev;
	__u32 found;
};

#define VM_EXEC 0x4

static long read_vma(struct task_struct *task, struct vm_area_struct *vma, struct vma_info *v)
{
	/* BTF pointers: plain loads (a fault reads 0), not a helper call per field. */
	v->start = vma->vm_start;
	v->end = vma->vm_end;
	v->pgoff = vma->vm_pgoff;
	v->flags = vma->vm_flags;
	struct file *file = vma->vm_file;
	if (file) {
		struct inode *inode = file->f_inode;
		v->inode = inode->i_ino;
		v->dev = inode->i_sb->s_dev;
	}
	v->found = 1;
	return 0;
}

/* Tells user space what the kernel's VMA says about an address of `pid` (a RECORD_VMA). */
static __always_inline void send_vma(void *ctx, __u32 pid, __u64 now, struct vma_info *v)
{
	struct vma_event event = {
		.type = RECORD_VMA,
		.pid = pid,
		.ktime_ns = now,
		.start = v->start,
		.end = v->end,
		.file_offset = v->pgoff << 12,
		.inode = v->inode,
		.dev = v->dev,
		.flags = VMA_EXECUTABLE,
	};
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &event, sizeof(event)))
		count(COUNTER_EVENT_SEND_FAILED);
	else
		count(COUNTER_VMA_REPORTS);
}

static __always_inline void record_mapping(struct task_struct *task, __u32 tgid,
					   struct vma_info *v);

/* A walk stopped at an address whose mapping was just learned resumes at that frame: it is filled
 * again. It was the walk's only unknown address (the walk stops at the first), so there is
 * nothing to report: a process first sight unwinds needs no sync, which under churn is most. */
static __always_inline void resume_walk(struct unwind_state *st)
{
	if (st->n_unknown == 1) {
		st->report_kind = 0;
		st->n_unknown = 0;
		st->leaf_unknown = 0;
	}
	st->n_user--;
	st->stopped_unknown = 0;
	st->outcome = UNWIND_WALKING;
}

/* What asking the kernel about a region came to, when it was asked about lately. */
#define ASKED_RECENTLY 1

/*
 * The kernel's VMA around `addr` of the process being walked, at most once per
 * REPORT_INTERVAL_NS per 2 MiB region of its image. Returns ASKED_RECENTLY (and whether the
 * kernel said the region was unmapped) when the region was asked about lately, else
 * bpf_find_vma's result: -EBUSY when the mmap lock (or the irq_work that releases it) is
 * busy, and then the region is not marked as asked.
 */
static __always_inline long ask_vma(struct unwind_state *st, __u64 addr, __u64 now,
				    struct vma_info *v, bool *unmapped)
{
	struct report_key key = {
		.pid = st->pid,
		.what = REPORTED_REGION | (__u32)(addr >> 21),
		.gen = st->exec_gen,
		.start_ns = st->start_ns,
	};
	struct report_value *last = recent_report(&key, now);
	if (last && (last->unmapped || (last->vma_start <= addr && addr < last->vma_end))) {
		*unmapped = last->unmapped;
		return ASKED_RECENTLY;
	}
	long err = bpf_find_vma(bpf_get_current_task_btf(), addr, read_vma, v, 0);
	if (err == -EBUSY)
		return err;
	/* Found or not (a frame-pointer walk can produce addresses in no VMA), do not ask about
	 * this VMA (or, when in none, this region) again soon: the next sample looks at the next
	 * one. */
	*unmapped = err == -ENOENT;
	mark_asked(&key, now, *unmapped, v->start, v->end);
	return err;
}

/*
 * Sends the kernel's view of the VMA behind one unresolved address: the first one whose 2 MiB
 * region was not reported recently. Only one lookup per sample is possible: in interrupt
 * context bpf_find_vma releases the mmap lock through a per-CPU irq_work, and a second call
 * finds it busy. Later samples of the process cover its other regions.
 *
 * Returns true when the innermost user address is in no VMA at all: the user stack is stale.
 */
static __always_inline bool report_vma(void *ctx, struct unwind_state *rc, __u64 now)
{
	for (int i = 0; i < MAX_VMA_LOOKUPS; i++) {
		if (i >= rc->n_unknown)
			return false;
		__u64 pc = rc->unknown[i];
		bool is_leaf = i == 0 && rc->leaf_unknown;
		struct vma_info v = {};
		bool unmapped = false;
		long err = ask_vma(rc, pc, now, &v, &unmapped);
		if (err == ASKED_RECENTLY) {
			if (is_leaf && unmapped)
				return true;
			continue;
		}
		if (err == -EBUSY)
			return false; /* the mmap lock is taken: try again with a later sample */
		if (unmapped)
			return is_leaf;
		if (err != 0 || !v.found)
			return false;
		send_vma(ctx, rc->pid, now, &v);
		/* First sight too: a later walk through the region (not asked again for a while)
		 * resolves it instead of stopping there. */
		if (v.inode && (v.flags & VM_EXEC) && rc->mm)
			record_mapping(bpf_get_current_task_btf(), rc->pid, &v);
		return false;
	}
	return false;
}

/*
 * First sight of a library mapped since the process's last sync: the walk stopped at an address
 * that neither pid_mappings nor the process's first-sight list covers. The sample spends its one
 * bpf_find_vma (its unlock is deferred to an irq_work that runs after the sample) on it: the VMA
 * goes into the list and to user space (like report_vma's reports), and the walk resumes at the
 * same frame. A stack through two such libraries learns the second at a later sample. This
 * replaces a tracepoint on mmap(2), which put every syscall on the machine on the slow path.
 * Returns whether the walk can resume.
 */
static __always_inline bool learn_vma(void *ctx, struct unwind_state *st,
				      struct task_struct *task, __u64 now)
{
	if (!st->stopped_unknown || !st->n_user || !st->mm)
		return false;
	struct vma_info v = {};
	bool unmapped = false;
	long err = ask_vma(st, st->pc_exact ? st->pc : st->pc - 1, now, &v, &unmapped);
	if (err == -EBUSY) {
		/* The process holds its mmap lock (a sample inside mmap or brk): user space finishes
		 * the walk from a copy, with the mappings /proc or the process's exit shows. The copy
		 * carries the first-sight list, so only a process with one is worth it. */
		struct proc_vmas *list = bpf_map_lookup_elem(&proc_vmas, &st->pid);
		if (list && list->mm == st->mm)
			st->copy_stack = 1;
		return false;
	}
	if (err != 0 || !v.found || !v.inode || !(v.flags & VM_EXEC))
		return false;
	record_mapping(task, st->pid, &v);
	send_vma(ctx, st->pid, now, &v);
	count(COUNTER_VMAS_LEARNED);
	resume_walk(st);
	return true;
}

static __always_inline void report_unknown(void *ctx, struct unwind_state *rc, __u64 now)
{
	if (!rc->report_kind)
		return;
	struct report_key key = { .pid = rc->pid, .what = rc->report_kind, .start_ns = rc->start_ns };
	/* Each file mapped since the last sync is worth its own report: one that came too early
	 * (a re-sync before ld.so mapped the next library) must not hold back the next file's. */
	if (rc->report_kind == RECORD_UNKNOWN_MAPPING && rc->new_file)
		key.gen = rc->new_file | REPORT_ADDR_NEW_FILE;
	if (recent_report(&key, now))
		return;
	mark_reported(&key, now);
	struct proc_event event = {
		.type = rc->report_kind,
		.pid = rc->pid,
		.ktime_ns = now,
		.addr = rc->report_kind == RECORD_UNKNOWN_MAPPING
				? rc->report_addr | (rc->new_file ? REPORT_ADDR_NEW_FILE : 0)
				: 0,
		.start_ns = rc->start_ns,
		.exec_gen = rc->exec_gen,
	};
	if (bpf_perf_event_output(ctx, &reports, BPF_F_CURRENT_CPU, &event, sizeof(event)))
		count(COUNTER_EVENT_SEND_FAILED);
}

/* One stack record per CPU, indexed by CPU number (too large for a per-CPU array's value);
 * user space sizes it to the possible CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack_record);
} stack_scratch SEC(".maps");

/*
 * Sends what user space needs to finish a walk that stopped at a file whose table it has not
 * built yet: the registers there, the process's mappings, and the stack above sp. On the prompt
 * `reports` buffer, which wakes the reader at once, so user space can read the rest of a deep
 * stack while the thread is still inside it; its trace follows on `events` (user space matches
 * them in either order). Only such samples pay for the copy.
 */
static __always_inline bool send_stack(void *ctx, struct task_struct *task, struct unwind_state *st,
				       struct trace *t)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct stack_record *rec = bpf_map_lookup_elem(&stack_scratch, &cpu);
	struct proc_vmas *list = bpf_map_lookup_elem(&proc_vmas, &st->pid);
	if (!rec || !list || list->mm != st->mm)
		return false;
	/* The main thread's frames lie below the stack's start: copy no further than that. */
	__u64 len = STACK_COPY_BYTES, top = task->mm->start_stack;
	if (st->sp < top && top - st->sp < len)
		len = top - st->sp;
	len &= 0xffff;
	if (len > STACK_COPY_BYTES)
		len = STACK_COPY_BYTES;
	if (len < 8 || bpf_probe_read_user(rec->data, len, (void *)st->sp) != 0) {
		/* A thread's stack may end sooner, and a read crossing its end fails whole. Its last
		 * readable page, by a binary search with one-byte reads: page m ends `first` + m pages
		 * past sp (m = 0 is sp's own), and a copy spans 15 pages at most. The outer frames
		 * of a thread (its start routine, start_thread, clone3) lie at that end. */
		__u64 first = 4096 - (st->sp & 4095);
		int lo = -1, hi = 15;
		for (int i = 0; i < 4; i++) {
			int mid = (lo + hi) / 2;
			__u8 byte;
			void *last = (void *)(st->sp + first + 4096 * (__u64)mid - 1);
			if (bpf_probe_read_user(&byte, 1, last) == 0)
				lo = mid;
			else
				hi = mid;
		}
		if (lo < 0)
			return false;
		len = first + 4096 * (__u64)lo;
		len &= 0xffff;
		if (len > STACK_COPY_BYTES)
			len = STACK_COPY_BYTES;
		if (len < 8 || bpf_probe_read_user(rec->data, len, (void *)st->sp) != 0)
			return false;
	}
	bpf_probe_read_kernel(rec->vma, sizeof(rec->vma), list->vma);
	rec->hdr.type = RECORD_STACK;
	rec->hdr.pid = st->pid;
	rec->hdr.tid = t->hdr.tid;
	rec->hdr.len = len;
	rec->hdr.ktime_ns = t->hdr.ktime_ns;
	rec->hdr.pc = st->pc;
	rec->hdr.sp = st->sp;
	rec->hdr.bp = st->bp;
	rec->hdr.pc_exact = st->pc_exact;
	rec->hdr.n_vmas = list->n;
	__u64 size = sizeof(rec->hdr) + sizeof(rec->vma) + len;
	if (size > sizeof(*rec))
		size = sizeof(*rec);
	if (bpf_perf_event_output(ctx, &reports, BPF_F_CURRENT_CPU, rec, size) != 0)
		return false;
	list->flags |= PROC_VMAS_COPIED; /* its exit sends the list (on_exit) */
	count(COUNTER_STACKS_COPIED);
	return true;
}

/* A process's identity next to its PID: when its thread group leader started. */
static __always_inline __u64 process_start(struct task_struct *task)
{
	return task->group_leader->start_boottime;
}

/* Which address space of a process: its start time, with the kernel's count of the execs in
 * its line (`self_exec_id`: every exec adds one; a fork or a new thread copies it) in the top
 * bits. An exec makes a new value, so pid_mappings entries written for the old image stop
 * matching at once, without a map write on exec; two processes on one PID differ by their
 * start. User space learns it from the reports and exec events that carry it. */
static __always_inline __u64 address_space_gen(struct task_struct *task, __u64 start_ns)
{
	return start_ns ^ ((__u64)task->self_exec_id << EXEC_GEN_SHIFT);
}

SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (tid == 0)
		return 0; /* the idle task */
	count(COUNTER_SAMPLES);
	struct task_struct *task = bpf_get_current_task_btf();
	if (!wanted(tgid) && !exiting_with_stack(task, tgid)) {
		count(COUNTER_FILTERED);
		return 0;
	}

	__u32 zero = 0;
	struct trace *t = bpf_map_lookup_elem(&scratch, &zero);
	if (!t)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	t->hdr.type = RECORD_TRACE;
	t->hdr.pid = tgid;
	t->hdr.tid = tid;
	t->hdr.cpu = bpf_get_smp_processor_id();
	t->hdr.ktime_ns = now;
	t->hdr.flags = 0;
	bpf_get_current_comm(t->hdr.comm, sizeof(t->hdr.comm));

	bool kernel_thread = task->flags & PF_KTHREAD;
	bool kernel_mode = (ctx->regs.cs & 3) == 0;

	long n_kernel = 0;
	if (kernel_mode) {
		t->hdr.flags |= TRACE_KERNEL_MODE;
		/* A sample in user mode has no kernel stack: skip the call. */
		n_kernel = bpf_get_stack(ctx, t->frames, MAX_KERNEL_FRAMES * sizeof(__u64), 0);
		if (n_kernel < 0) {
			count(COUNTER_KSTACK_FAILED);
			t->hdr.flags |= TRACE_KSTACK_FAILED;
			n_kernel = 0;
		}
		n_kernel /= sizeof(__u64);
	}
	if (n_kernel > MAX_KERNEL_FRAMES)
		n_kernel = MAX_KERNEL_FRAMES;

	struct unwind_state st = {
		.pid = tgid,
		.n_kernel = n_kernel,
		.generation = mappings_generation,
		.pc_exact = 1,
	};
	if (kernel_thread) {
		t->hdr.flags |= TRACE_KERNEL_THREAD;
	} else {
		/* The user registers: the interrupted ones, or those saved at kernel entry. */
		if (kernel_mode) {
			struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
			bpf_probe_read_kernel(&st.pc, sizeof(st.pc), &regs->ip);
			bpf_probe_read_kernel(&st.sp, sizeof(st.sp), &regs->sp);
			bpf_probe_read_kernel(&st.bp, sizeof(st.bp), &regs->bp);
		} else {
			st.pc = ctx->regs.ip;
			st.sp = ctx->regs.sp;
			st.bp = ctx->regs.bp;
		}
		st.start_ns = process_start(task);
		st.mm = (__u64)task->mm;
		st.exec_gen = address_space_gen(task, st.start_ns);
		if (st.mm || !use_exit_stack(&st, t)) {
			python_begin(&st.py, tgid, st.start_ns, task); /* Python (bpf/python.h) */
			if (st.pc)
				bpf_loop(MAX_USER_FRAMES, unwind_frame, &st, 0);
			if (learn_vma(ctx, &st, task, now))
				bpf_loop(MAX_USER_FRAMES, unwind_frame, &st, 0);
		}
		if (st.outcome == UNWIND_WALKING)
			st.outcome = UNWIND_DONE_DEPTH;
		count(COUNTER_UNWIND_BASE + (st.outcome & 0xf));
		add(COUNTER_CACHE_HITS, st.cache_hits);
		add(COUNTER_FRAMES_RESOLVED, st.resolved);
		add(COUNTER_TABLE_FRAMES, st.table_frames);
		add(COUNTER_FP_FRAMES, st.fp_frames);
		t->hdr.flags |= (st.outcome & 0xf) << TRACE_UNWIND_SHIFT;
	}
	__u32 n_user = st.n_user;
	report_unknown(ctx, &st, now);
	if (report_vma(ctx, &st, now)) {
		t->hdr.flags |= TRACE_USER_STALE;
		count(COUNTER_USER_STALE);
		n_user = 0;
	}
	if (n_user > MAX_USER_FRAMES)
		n_user = MAX_USER_FRAMES;
	if (st.copy_stack && n_user && st.outcome == UNWIND_DONE_NO_MAPPING) {
		if (send_stack(ctx, task, &st, t)) {
			t->hdr.flags |= TRACE_HAS_STACK;
			/* Python (bpf/python.h): the interpreter frames the walk did not reach. */
			__u32 nk = n_kernel & KERNEL_FRAME_MASK, nu = n_user & USER_FRAME_MASK;
			if (n_user < MAX_USER_FRAMES)
				n_user += python_tail(&st.py, t, nk + 2 * nu, MAX_USER_FRAMES - nu);
		} else {
			count(COUNTER_STACK_COPY_FAILED);
		}
	}
	t->hdr.n_kernel = n_kernel;
	t->hdr.n_user = n_user;

	__u64 size = sizeof(t->hdr) + (n_kernel + 2 * (__u64)n_user) * sizeof(__u64);
	if (size > sizeof(t->hdr) + MAX_FRAME_WORDS * sizeof(__u64))
		size = sizeof(t->hdr) + MAX_FRAME_WORDS * sizeof(__u64);
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, t, size) == 0)
		count(COUNTER_SENT);
	else
		count(COUNTER_SEND_FAILED);
	return 0;
}

/* Exits (and, when every process is profiled, execs) go with the samples: nothing waits for
 * them, and on a busy machine there are thousands a second, each of which would otherwise wake
 * the reader. When only some processes are profiled, their execs go on the prompt channel so
 * the maintainer syncs them before their first samples. */
static __always_inline void *proc_event_channel(__u32 type)
{
	return type == RECORD_EXEC && filter_pids ? (void *)&reports : (void *)&events;
}

static __always_inline void send_proc_event(void *ctx, __u32 type, struct task_struct *task)
{
	struct proc_event event = {
		.type = type,
		.pid = task->tgid,
		.ktime_ns = bpf_ktime_get_ns(),
		.start_ns = process_start(task),
	};
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &event, sizeof(event)) != 0)
		count(COUNTER_EVENT_SEND_FAILED);
}

/* A forked child has its parent's mappings: it inherits the parent's record, so it unwinds
 * from its first sample too. */
static __always_inline void inherit_vmas(__u32 parent_tgid, struct task_struct *parent,
					 __u32 child_tgid, struct task_struct *child)
{
	struct proc_vmas *list = bpf_map_lookup_elem(&proc_vmas, &parent_tgid);
	if (!list || list->mm != (__u64)parent->mm)
		return;
	if (bpf_map_update_elem(&proc_vmas, &child_tgid, list, BPF_ANY) != 0)
		return;
	struct proc_vmas *copy = bpf_map_lookup_elem(&proc_vmas, &child_tgid);
	if (copy) {
		copy->mm = (__u64)child->mm;
		copy->pid = child_tgid;
		copy->flags = 0;
	}
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = parent->tgid;
	__u32 child_tgid = child->tgid;
	if (parent_tgid == child_tgid)
		return 0; /* a thread */
	inherit_vmas(parent_tgid, parent, child_tgid, child);
	if (!filter_pids || !bpf_map_lookup_elem(&pid_filter, &parent_tgid))
		return 0;
	__u8 profile = FILTER_PROFILE;
	if (bpf_map_update_elem(&pid_filter, &child_tgid, &profile, BPF_ANY) != 0)
		count(COUNTER_FILTER_FULL);
	return 0;
}

/* Per-CPU room for an exec event (too big for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_event);
} exec_scratch SEC(".maps");

static __always_inline void record_vma(struct task_struct *task, __u32 tgid, __u64 addr);

/* The kernel mapped the new executable and its dynamic loader itself (no mmap(2) to see): record
 * both, from the executable's code start and the entry point the registers hold. */
static __always_inline void seed_vmas(struct task_struct *task, __u32 tgid)
{
	record_vma(task, tgid, task->mm->start_code);
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	__u64 ip = 0;
	bpf_probe_read_kernel(&ip, sizeof(ip), &regs->ip);
	if (ip)
		record_vma(task, tgid, ip);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *task, int old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = task->tgid;
	if (!wanted(tgid))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0;
	struct exec_event *event = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!event)
		return 0;
	event->type = RECORD_EXEC;
	event->pid = tgid;
	event->ktime_ns = now;
	event->start_ns = process_start(task);
	event->exec_gen = address_space_gen(task, event->start_ns);
	struct inode *inode = bprm->file->f_inode;
	event->inode = inode->i_ino;
	event->dev = inode->i_sb->s_dev;
	/* A process user space never heard of, starting a file whose table exists: nobody needs
	 * this event (if the process is ever sampled, the sampler reports it and the maintainer
	 * names it). Under churn that is almost every exec. */
	if (!filter_pids && !bpf_map_lookup_elem(&tracked, &tgid)) {
		struct file_table_key key = { .dev = event->dev, .inode = event->inode };
		if (bpf_map_lookup_elem(&file_tables, &key)) {
			count(COUNTER_EXECS_QUIET);
			seed_vmas(task, tgid);
			return 0;
		}
	}
	const char *interp = bprm->interp;
	long n = bpf_probe_read_kernel_str(event->path, sizeof(event->path), interp);
	if (n <= 0) {
		event->path[0] = 0;
		n = 1;
	}
	if (n > PATH_LEN)
		n = PATH_LEN;
	event->path_len = n;
	__u64 size = sizeof(*event) - sizeof(event->path) + n;
	if (bpf_perf_event_output(ctx, proc_event_channel(RECORD_EXEC), BPF_F_CURRENT_CPU, event, size) != 0)
		count(COUNTER_EVENT_SEND_FAILED);
	seed_vmas(task, tgid);
	return 0;
}

/* Mappings an exit walk looks up for itself at most: libc (where exit_group is called from) and
 * what lies between it and the executable. */
#define EXIT_LEARNS 3

/*
 * An exit walk stopped at an address nothing covers: in process context bpf_find_vma can take
 * the mmap lock as often as needed, so the mapping is recorded for first sight (and so sent
 * with the list, see on_exit) and the walk resumes at the same frame. Returns whether it can.
 */
static __noinline bool learn_exit_vma(struct task_struct *task, struct unwind_state *st)
{
	if (!st->stopped_unknown || !st->n_user)
		return false;
	struct vma_info v = {};
	__u64 addr = st->pc_exact ? st->pc : st->pc - 1;
	if (bpf_find_vma(task, addr, read_vma, &v, 0) != 0 || !v.found || !v.inode ||
	    !(v.flags & VM_EXEC))
		return false;
	record_mapping(task, st->pid, &v);
	count(COUNTER_EXIT_VMAS_LEARNED);
	resume_walk(st);
	return true;
}

/*
 * Puts the mapping of `addr` in the process's first-sight list unless it is there. A process
 * that was running when the session began has a list of only what its walks stopped at: the
 * libc its exit walk passes through may be in pid_mappings alone, and its cut walks need it.
 */
static __noinline void list_vma(struct task_struct *task, __u32 tgid, __u64 addr)
{
	struct proc_vmas *list = bpf_map_lookup_elem(&proc_vmas, &tgid);
	if (!list)
		return;
	__u32 n = list->n;
	for (int i = 0; i < PROC_VMA_SLOTS; i++) {
		if (i < n && list->vma[i].start <= addr && addr < list->vma[i].end)
			return;
	}
	record_vma(task, tgid, addr);
}

/* Walks the exiting process's user stack into exit_stacks (see use_exit_stack); with `listed`,
 * the mapping where the walk starts joins the process's first-sight list. */
static __always_inline void take_exit_stack(struct task_struct *task, __u32 tgid, bool listed)
{
	if (!task->mm)
		return; /* a kernel whose tracepoint comes after exit_mm: nothing left to walk */
	struct unwind_state st = {
		.pid = tgid,
		.generation = mappings_generation,
		.pc_exact = 1,
	};
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	bpf_probe_read_kernel(&st.pc, sizeof(st.pc), &regs->ip);
	bpf_probe_read_kernel(&st.sp, sizeof(st.sp), &regs->sp);
	bpf_probe_read_kernel(&st.bp, sizeof(st.bp), &regs->bp);
	if (!st.pc)
		return;
	if (listed)
		list_vma(task, tgid, st.pc);
	st.start_ns = process_start(task);
	st.mm = (__u64)task->mm;
	st.exec_gen = address_space_gen(task, st.start_ns);
	bpf_loop(EXIT_STACK_FRAMES, unwind_exit_frame, &st, 0);
	for (int i = 0; i < EXIT_LEARNS && learn_exit_vma(task, &st); i++)
		bpf_loop(EXIT_STACK_FRAMES, unwind_exit_frame, &st, 0);
	if (st.outcome == UNWIND_WALKING)
		st.outcome = UNWIND_DONE_DEPTH;
	__u32 zero = 0;
	struct trace *t = bpf_map_lookup_elem(&exit_scratch, &zero);
	struct exit_stack *s = bpf_map_lookup_elem(&exit_stack_scratch, &zero);
	if (!t || !s)
		return;
	__u32 n = st.n_user;
	if (n > EXIT_STACK_FRAMES)
		n = EXIT_STACK_FRAMES;
	if (bpf_probe_read_kernel(s->frames, n * 2 * sizeof(__u64), t->frames) != 0)
		return;
	s->start_ns = st.start_ns;
	s->n_user = n;
	s->outcome = st.outcome;
	if (bpf_map_update_elem(&exit_stacks, &tgid, s, BPF_ANY) == 0)
		count(COUNTER_EXIT_WALKS);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	/* do_exit() decrements signal->live before this tracepoint: zero means the last thread
	 * is leaving. Newer kernels also pass group_dead, older ones do not; this works on both. */
	if (task->signal->live.counter != 0)
		return 0; /* another thread of the process lives on */
	__u32 tgid = task->tgid;
	if (!wanted(tgid))
		return 0;
	/* With a PID filter every profiled process is synced at exec, so every exit matters. */
	bool heard_of = filter_pids || bpf_map_delete_elem(&tracked, &tgid) == 0;
	if (heard_of)
		send_proc_event(ctx, RECORD_EXIT, task);
	else
		count(COUNTER_EXITS_QUIET);
	/* A process first sight unwound is never reported, so "heard of" misses most of a build's
	 * compilers: a big address space (a long teardown, likely to be sampled) also earns the
	 * walk. Small ones, most of the churn, are torn down in microseconds. */
	struct mm_struct *mm = task->mm;
	struct proc_vmas *list = bpf_map_lookup_elem(&proc_vmas, &tgid);
	bool copied = list && list->mm == (__u64)mm && (list->flags & PROC_VMAS_COPIED);
	if (heard_of || copied || (mm && mm->total_vm >= EXIT_WALK_MIN_PAGES))
		take_exit_stack(task, tgid, copied);
	/* Walks of it that wait in user space for tables may need the libraries only later
	 * samples (or the exit walk) learned, and the process is gone before /proc shows them. */
	list = copied ? bpf_map_lookup_elem(&proc_vmas, &tgid) : NULL;
	if (list) {
		if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, list,
					  __builtin_offsetof(struct proc_vmas, mm)) == 0)
			count(COUNTER_MAPPINGS_SENT);
		else
			count(COUNTER_EVENT_SEND_FAILED);
	}
	bpf_map_delete_elem(&proc_vmas, &tgid);
	if (filter_pids)
		bpf_map_delete_elem(&pid_filter, &tgid);
	return 0;
}



/* Records an executable file mapping in the process's first-sight list. An exec replaces the
 * address space: the first mapping recorded in the new one starts a new list. */
static __always_inline void record_mapping(struct task_struct *task, __u32 tgid,
					   struct vma_info *v)
{
	__u64 mm = (__u64)task->mm;
	struct proc_vmas *list = bpf_map_lookup_elem(&proc_vmas, &tgid);
	if (!list || list->mm != mm) {
		__u32 zero = 0;
		struct proc_vmas *fresh = bpf_map_lookup_elem(&proc_vmas_scratch, &zero);
		if (!fresh)
			return;
		fresh->type = RECORD_MAPPINGS;
		fresh->pid = tgid;
		fresh->mm = mm;
		fresh->n = 0;
		fresh->flags = 0;
		if (bpf_map_update_elem(&proc_vmas, &tgid, fresh, BPF_ANY) != 0)
			return;
		list = bpf_map_lookup_elem(&proc_vmas, &tgid);
		if (!list)
			return;
	}
	/* Not atomic (clang 14's BPF target has no fetch-and-add result): two CPUs recording at
	 * the same instant may share a slot, which costs first sight for one file. */
	__u32 i = list->n;
	if (i >= PROC_VMA_SLOTS) {
		count(COUNTER_VMA_SLOTS_FULL);
		return;
	}
	list->n = i + 1;
	struct proc_vma *vma = &list->vma[i & (PROC_VMA_SLOTS - 1)];
	vma->start = v->start;
	vma->end = v->end;
	vma->offset = v->pgoff << 12;
	vma->inode = v->inode;
	vma->dev = v->dev;
}

/* Records the executable file mapping around `addr`; in process context only (there
 * bpf_find_vma can take the mmap lock as often as needed). */
static __always_inline void record_vma(struct task_struct *task, __u32 tgid, __u64 addr)
{
	struct vma_info v = {};
	if (bpf_find_vma(task, addr, read_vma, &v, 0) != 0 || !v.found || !v.inode ||
	    !(v.flags & VM_EXEC))
		return;
	record_mapping(task, tgid, &v);
}
