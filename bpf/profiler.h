/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Records and maps shared between the BPF programs and user space. This header is the one
 * definition of every layout that crosses the boundary: build.rs generates the Rust constants
 * from it, src/layout/ mirrors the structs and asserts their sizes and offsets at
 * compile time, and the _Static_asserts below pin the same numbers here.
 */
#ifndef PROFILER_SHARED_H
#define PROFILER_SHARED_H

#define COMM_LEN 16
#define PATH_LEN 256
#define MAX_KERNEL_FRAMES 127
#define MAX_USER_FRAMES 512
/* Indexes are masked with this before use, which the verifier trusts more than earlier checks. */
#define USER_FRAME_MASK 511
#define KERNEL_FRAME_MASK 127
/* u64 slots of a trace: kernel addresses, then two slots per user frame */
#define MAX_FRAME_WORDS (MAX_KERNEL_FRAMES + 2 * MAX_USER_FRAMES)
#define MAX_FILTER_PIDS 65536
/* Recent mappings each CPU remembers in front of the pid_mappings trie. */
#define MAPPING_CACHE_SLOTS 8
/* Nanoseconds between two reports of the same unknown PID / mapping / VMA. */
#define REPORT_INTERVAL_NS 500000000ULL
/* In a RECORD_UNKNOWN_MAPPING's address: the first-sight list shows a file mapped where the
 * walk went, which user space has not registered (a library mapped since the last sync), not a
 * stray address from a frame-pointer walk. */
#define REPORT_ADDR_NEW_FILE (1ULL << 63)
/* Where the exec count starts in an address-space generation (address_space_gen). */
#define EXEC_GEN_SHIFT 52

/* pid_filter values */
#define FILTER_PROFILE 1          /* sample this process and follow its children */
#define FILTER_FOLLOW_CHILDREN 2  /* do not sample it, but profile the children it forks */

/* First field of every record in the `events` perf buffer. */
enum record_type {
	RECORD_TRACE = 1,
	RECORD_EXEC = 2,
	RECORD_EXIT = 3,
	RECORD_UNKNOWN_PID = 4,     /* a sample from a PID with no entry in pid_mappings */
	RECORD_UNKNOWN_MAPPING = 5, /* a known PID, an address no mapping entry covers */
	RECORD_VMA = 6,             /* what the kernel's VMA says about such an address */
	RECORD_STACK = 7,           /* registers and stack of a walk cut at a file without a table */
	RECORD_MAPPINGS = 8,        /* an exiting process's first-sight list (struct proc_vmas) */
};

/* trace_header.flags */
#define TRACE_KERNEL_MODE (1U << 0)   /* the sample interrupted kernel code */
#define TRACE_KERNEL_THREAD (1U << 1) /* a kernel thread: no user stack */
#define TRACE_KSTACK_FAILED (1U << 2) /* bpf_get_stack failed for the kernel stack */
#define TRACE_USTACK_FAILED (1U << 3) /* bpf_get_stack failed for the user stack */
/* The user stack was dropped: its innermost address is in no VMA of the current address space
 * (a sample inside execve after the switch to the new image, whose registers still hold the
 * old image's addresses). */
#define TRACE_USER_STALE (1U << 4)
/* The walk stopped at a file whose table user space has not built yet: a RECORD_STACK with the
 * same tid and ktime_ns went ahead of this trace, so user space can finish the walk later. */
#define TRACE_HAS_STACK (1U << 5)

/*
 * pid_mappings: an LPM trie keyed by (pid, address). Each executable mapping of a process is
 * covered by a few aligned power-of-two prefixes; one "marker" entry per known PID has
 * prefixlen 32 (the PID alone) and so matches every address of that PID that no mapping covers.
 * Key parts are big-endian, as LPM tries compare bytes from the first one.
 */
#define PID_MAPPING_KEY_BITS 96 /* 32 bits of PID + 64 bits of address */
#define PID_MAPPING_MARKER_PREFIX 32

struct pid_mapping_key {
	__u32 prefixlen;
	__u32 pid_be;
	__u64 addr_be;
};

/* pid_mapping_value.flags */
#define MAPPING_MARKER (1U << 0) /* the per-PID "known process" entry */
#define MAPPING_ANON (1U << 1)   /* executable memory without a file (JIT): no file_id */
/* The file's unwind table is being built: the walk stops here (and the stack is copied so
 * user space can finish it once the table exists) instead of guessing with frame pointers. */
#define MAPPING_TABLE_PENDING (1U << 2)

struct pid_mapping_value {
	__u32 file_id;      /* 0 for markers and anonymous memory */
	__u16 flags;
	__u16 prefixlen;    /* of the entry's own key: lets user space test exact presence */
	__u64 bias;         /* file offset = address - bias */
	__u64 prefix_addr;  /* first address the entry's prefix covers */
	/* The process's exec_gen when user space read the maps this entry came from: the time of
	 * its last exec (the exec_gen map), or its start_ns when no exec was seen. An entry is only
	 * used while it equals the current exec_gen: after an exec, or when the PID now belongs to
	 * another process, stale entries are ignored until user space has re-read the maps. */
	__u64 exec_gen;
	/* The file's unwind table in unwind_buckets: `table_direct` buckets (one per KiB of text
	 * from file offset `table_base`) from index `table_first`; 0 buckets: no table, walk frame
	 * pointers. */
	__u32 table_first;
	__u32 table_direct;
	__u64 table_base;
	/* The whole mapping this entry is a block of, [map_start, map_end): the sampler's per-CPU
	 * cache then holds one slot per mapping, not one per block of the trie's cover (a mapping
	 * takes up to ~2 x 47 blocks), so a stack through one library costs one trie lookup. */
	__u64 map_start;
	__u64 map_end;
};

/*
 * file_tables: every file user space has registered, by the kernel's identity of its inode, so
 * the sampler can unwind a process user space has not synced yet ("first sight"): the exec hook
 * and the sampler (learn_vma) record each process's executable file mappings, and the file's
 * entry here names its file_id and unwind table. Written by user space (the maintainer) only.
 */
struct file_table_key {
	__u32 dev;  /* kernel encoding: major << 20 | minor */
	__u32 _pad;
	__u64 inode;
};

struct file_table_value {
	__u32 file_id;
	__u32 table_first;  /* as in pid_mapping_value; 0 buckets: no table */
	__u32 table_direct;
	__u32 flags;        /* MAPPING_TABLE_PENDING */
	__u64 table_base;
};

/* Executable file mappings the sampler keeps per process (first sight). */
#define PROC_VMA_SLOTS 32

/* One of them: where a file is mapped. */
struct proc_vma {
	__u64 start;
	__u64 end;
	__u64 offset; /* file offset of start */
	__u64 inode;
	__u32 dev;    /* kernel encoding */
	__u32 _pad;
};

/* Bytes of user stack (from the cut frame's sp) a RECORD_STACK carries at most: as much as a
 * perf record holds (64 KiB with the header and the mappings). LLVM's biggest frames (37 KiB,
 * ReduceLoopStrength) fit; at 32 KiB their walks depended on reading the live stack later. */
#define STACK_COPY_BYTES 61440

/* RECORD_STACK: the registers of the frame where the walk stopped, the process's mappings as
 * first sight knew them (all PROC_VMA_SLOTS slots, n_vmas used), then `len` bytes of stack. */
struct stack_header {
	__u32 type;
	__u32 pid;
	__u32 tid;
	__u32 len;
	__u64 ktime_ns; /* the trace's */
	__u64 pc;
	__u64 sp;
	__u64 bp;
	__u32 pc_exact; /* pc is where execution is, not a return address */
	__u32 n_vmas;
};

struct stack_record {
	struct stack_header hdr;
	struct proc_vma vma[PROC_VMA_SLOTS];
	__u8 data[STACK_COPY_BYTES];
};

/* The executable file mappings of a process as the exec hook and the sampler (learn_vma)
 * recorded them, in that order: the sampler's per-process first-sight list. Only valid while
 * `mm` is the process's address space: an exec starts a new list. When a process some of whose
 * walks were cut (PROC_VMAS_COPIED) exits, the list goes to user space as a RECORD_MAPPINGS,
 * without `mm`: by then it also holds the libraries the exit walk reached, which the cut walks'
 * records may lack when the process is gone before user space reads them. */
struct proc_vmas {
	__u32 type;  /* RECORD_MAPPINGS */
	__u32 pid;
	__u32 n;
	__u32 flags; /* PROC_VMAS_COPIED */
	struct proc_vma vma[PROC_VMA_SLOTS];
	__u64 mm;    /* not sent */
};

/* A RECORD_STACK was sent for the process's current image. */
#define PROC_VMAS_COPIED (1U << 0)

/*
 * Unwind tables (src/unwind/compact.rs documents and tests the encoding and the search).
 * One bucket per KiB of text: 64 sorted keys `(pc_in_kib << 5) | rule_index` (unused: 0xffff)
 * over 32 shared rules. A rule's kind byte holds the CFA kind (bits 0-3) and the rbp kind (bits
 * 4-5); operands count 8-byte units.
 */
#define UNWIND_KEYS 64
#define UNWIND_RULES 32
#define UNWIND_KEY_RULE_BITS 5
#define UNWIND_BUCKET_SHIFT 10

struct unwind_rule {
	__u8 kind;
	__s8 rbp;
	__s16 cfa;
};

struct unwind_bucket {
	__u16 key[UNWIND_KEYS];
	struct unwind_rule rule[UNWIND_RULES];
};

/* Where a file's table lives in unwind_buckets, as pid_mapping_value and file_table_value say:
 * `direct` buckets (one per KiB of text from file offset `base`) from index `first`, then its
 * overflow buckets; 0 direct buckets: no table. */
struct table_ref {
	__u32 first;
	__u32 direct;
	__u64 base;
};

/* The context of table_search_test.bpf.c's program, run with BPF_PROG_TEST_RUN: a table and a
 * file offset in, what find_rule (bpf/table_search.h) found out. */
struct table_search_run {
	struct table_ref table;  /* in */
	__u64 offset;            /* in */
	__u32 found;             /* out: 1 when find_rule returned a rule */
	__u32 bucket;            /* out: the unwind_buckets index of the bucket holding it */
	struct unwind_rule rule; /* out: a copy of it */
	__u32 _pad;
};

/* CFA kinds */
#define UNWIND_NO_INFO 0
#define UNWIND_RSP 1
#define UNWIND_RBP 2
#define UNWIND_PLT 3
#define UNWIND_DEREF_RSP 4
#define UNWIND_DEREF_RBP 5
#define UNWIND_OUTERMOST 6
#define UNWIND_SIGNAL 7
#define UNWIND_UNSUPPORTED 8
#define UNWIND_REDIRECT 9
#define UNWIND_RSP_WIDE 10 /* CFA = rsp + ((kind >> 6) << 16 | (u16)cfa) * 8: frames > 256 KiB */
/* rbp kinds */
#define UNWIND_RBP_UNCHANGED 0
#define UNWIND_RBP_AT_CFA 1
#define UNWIND_RBP_AT_RBP 2
#define UNWIND_RBP_UNKNOWN 3
/* Where a signal trampoline's ucontext_t keeps the interrupted registers (offsets from rsp). */
#define SIGFRAME_RBP 120
#define SIGFRAME_RSP 160
#define SIGFRAME_RIP 168

/* How a user stack walk ended: trace_header.flags >> TRACE_UNWIND_SHIFT & 0xf. */
#define TRACE_UNWIND_SHIFT 8
enum unwind_outcome {
	UNWIND_WALKING = 0,
	UNWIND_DONE_OUTERMOST = 1, /* reached a frame marked outermost (or a zero return address) */
	UNWIND_DONE_NO_MAPPING = 2,/* an address no mapping covers and no frame pointer to follow */
	UNWIND_DONE_NO_INFO = 3,   /* no unwind info and no frame pointer to follow */
	UNWIND_DONE_BAD_CFA = 4,   /* the frame computed does not move up the stack */
	UNWIND_DONE_READ_FAULT = 5,/* the stack could not be read */
	UNWIND_DONE_DEPTH = 6,     /* MAX_USER_FRAMES reached */
	UNWIND_DONE_UNSUPPORTED = 7, /* CFI the unwinder cannot follow */
	UNWIND_DONE_FP_END = 8,    /* a frame-pointer walk reached a zero frame pointer */
	UNWIND_OUTCOMES = 9,
};

/* trace frames: user frames are two u64 slots, { address, file_id | flags << 32 }. */
#define FRAME_RESOLVED (1U << 0) /* address is a file offset in file_id */
#define FRAME_NO_PID (1U << 1)   /* no entry for the PID: raw address */
#define FRAME_NO_MAPPING (1U << 2) /* only the PID's marker matched: raw address */
#define FRAME_ANON (1U << 3)     /* anonymous executable memory (JIT): raw address */
/* A CPython frame: address is the code object's address in the process, file_id the
 * instruction position (struct python_proc says how to read it). */
#define FRAME_PYTHON (1U << 4)
/* A walk cut at a file without a table (copy_stack) cannot place the Python frames of the eval
 * loops it did not reach: they follow the native frames, for user space to place as it finishes
 * the walk. First FRAME_PY_EVAL (address: _PyEval_EvalFrameDefault's start in the process,
 * file_id: its length), then, innermost first, FRAME_PYTHON | FRAME_PY_LATER frames, each eval
 * loop call's run ended by a FRAME_PY_SPLIT. */
#define FRAME_PY_EVAL (1U << 5)
#define FRAME_PY_LATER (1U << 6)
#define FRAME_PY_SPLIT (1U << 7)
/* Python frames sent that way per sample, at most (markers included). */
#define PYTHON_TAIL_ENTRIES 96

/* Unknown addresses per sample whose VMA the sampler asks the kernel about. */
#define MAX_VMA_LOOKUPS 6

/* A sampled stack: this header, then n_kernel kernel addresses (leaf first), then n_user user
 * frames (leaf first) of two u64 slots each. Only the used part is sent. */
struct trace_header {
	__u32 type;      /* RECORD_TRACE */
	__u32 pid;       /* thread group id */
	__u32 tid;
	__u32 cpu;
	__u64 ktime_ns;  /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	char comm[COMM_LEN];
	__u16 n_kernel;
	__u16 n_user;
	__u32 flags;
};

struct trace {
	struct trace_header hdr;
	/* Spare words so indexes built from masked parts are always in bounds. */
	__u64 frames[MAX_FRAME_WORDS + 2];
};

/* Exit, unknown PID and unknown mapping reports. */
struct proc_event {
	__u32 type;
	__u32 pid;
	__u64 ktime_ns;
	__u64 addr;     /* RECORD_UNKNOWN_MAPPING: the address; else 0 */
	/* The process's identity next to its PID: the thread group leader's start_boottime (ns).
	 * /proc/PID/stat shows the same instant in clock ticks. */
	__u64 start_ns;
	/* Reports: which address space (image) of the process they are about; pid_mappings
	 * entries written for it carry the same value (see address_space_gen in sampler.bpf.c).
	 * 0 in exits, which need none. */
	__u64 exec_gen;
};

/* An exec: the process's new executable, as execve named it (may be relative). */
struct exec_event {
	__u32 type;     /* RECORD_EXEC */
	__u32 pid;
	__u64 ktime_ns;
	__u64 start_ns; /* identity, as in proc_event */
	__u64 exec_gen; /* the new image's, as in proc_event */
	__u64 inode;    /* of the file that was executed (the interpreter for #! scripts) */
	__u32 dev;      /* kernel encoding: major << 20 | minor */
	__u32 path_len; /* bytes of path used, including the NUL */
	char path[PATH_LEN];
};

/* A VMA the kernel reported for an address that pid_mappings could not resolve, so short-lived
 * processes are attributed even when user space never sees them alive. */
struct vma_event {
	__u32 type;     /* RECORD_VMA */
	__u32 pid;
	__u64 ktime_ns;
	__u64 start;
	__u64 end;
	__u64 file_offset; /* of `start` in the file */
	__u64 inode;       /* 0 for anonymous memory */
	__u32 dev;         /* kernel encoding */
	__u32 flags;       /* VMA_EXECUTABLE... */
};

#define VMA_EXECUTABLE (1U << 0)

/* Indexes of the per-CPU `counters` array. */
enum counter {
	COUNTER_SAMPLES = 0,         /* perf_event program runs that were not idle */
	COUNTER_FILTERED = 1,        /* samples skipped by the PID filter */
	COUNTER_SENT = 2,            /* trace records handed to the perf buffer */
	COUNTER_SEND_FAILED = 3,     /* bpf_perf_event_output failed (buffer full): lost */
	COUNTER_KSTACK_FAILED = 4,
	COUNTER_USTACK_FAILED = 5,
	COUNTER_EVENT_SEND_FAILED = 6, /* process events and reports lost */
	COUNTER_FILTER_FULL = 7,       /* a forked child could not be added to the PID filter */
	COUNTER_FRAMES_RESOLVED = 8,   /* user frames resolved through pid_mappings */
	COUNTER_FRAMES_NO_PID = 9,
	COUNTER_FRAMES_NO_MAPPING = 10,
	COUNTER_CACHE_HITS = 11,       /* frames resolved by the per-CPU mapping cache */
	COUNTER_VMA_REPORTS = 12,
	COUNTER_USER_STALE = 13,       /* user stacks dropped: their leaf is in no VMA */
	COUNTER_TABLE_FRAMES = 14,     /* frames unwound with an unwind table */
	COUNTER_FP_FRAMES = 15,        /* frames unwound with frame pointers */
	COUNTER_UNWIND_BASE = 16,      /* + outcome: how walks ended */
	/* Frames of a process not synced yet (or of a mapping not synced yet) resolved from the
	 * first-sight list and file_tables, in the kernel ("first sight"). */
	COUNTER_FRAMES_FIRST_SIGHT = 25,
	/* ... whose file user space has not registered yet: the walk stops there. */
	COUNTER_FIRST_SIGHT_UNKNOWN_FILE = 26,
	COUNTER_VMA_SLOTS_FULL = 27,   /* executable mappings the first-sight list had no slot for */
	COUNTER_STACKS_COPIED = 28,    /* RECORD_STACKs sent */
	COUNTER_STACK_COPY_FAILED = 29,/* cut walks whose stack could not be copied or sent */
	/* Exits not sent: of processes never reported to user space (nothing there to clean up). */
	COUNTER_EXITS_QUIET = 30,
	/* Execs not sent: of processes never reported, into a file whose table exists. */
	COUNTER_EXECS_QUIET = 31,
	/* Samples of a process user space marked as CPython (bpf/python.h). */
	COUNTER_PYTHON_SAMPLES = 32,
	COUNTER_PYTHON_FRAMES = 33,     /* interpreter frames recorded */
	/* Python walks cut, by reason: the sampled thread's state was not found among the first
	 * PYTHON_MAX_THREADS threads (or the thread runs no Python), an interpreter frame could not
	 * be read, the eval loop's frames ran out before the native stack did. */
	COUNTER_PYTHON_NO_THREAD = 34,
	COUNTER_PYTHON_READ_FAULT = 35,
	COUNTER_PYTHON_MISMATCH = 36,
	/* User stacks walked as a sampled process began to exit, before its address space went
	 * (on_exit), and samples taken during the teardown that were given that stack. */
	COUNTER_EXIT_WALKS = 37,
	COUNTER_EXIT_STACKS_USED = 38,
	/* Executable mappings the sampler looked up (bpf_find_vma) for a walk that stopped at
	 * them, recorded for first sight; the walk went on (learn_vma in sampler.bpf.c). */
	COUNTER_VMAS_LEARNED = 39,
	/* Mappings the exit walk looked up for itself (in process context, as often as needed),
	 * and first-sight lists sent at exit (RECORD_MAPPINGS). */
	COUNTER_EXIT_VMAS_LEARNED = 40,
	COUNTER_MAPPINGS_SENT = 41,
	COUNTER_MAX = 42,
};

/*
 * python_procs: the CPython processes user space found (src/python/), by PID. Offsets of the
 * interpreter's structures for that process's version, the address of `_PyRuntime` and the
 * range of `_PyEval_EvalFrameDefault` in its address space. bpf/python.h documents the walk.
 */
#define PYTHON_MAX_THREADS 64
/* python_proc.cframe_frame when tstate_frame already holds the current frame (3.10, 3.13). */
#define PYTHON_NO_CFRAME 0xffff

struct python_proc {
	__u64 start_ns;          /* the process's identity: entries of an earlier PID holder are ignored */
	__u64 runtime;           /* address of _PyRuntime */
	__u64 eval_start;        /* _PyEval_EvalFrameDefault: [eval_start, eval_end) */
	__u64 eval_end;
	__u32 minor;             /* 3.minor: 10 to 13 */
	__u16 interpreters_head; /* in _PyRuntime: the first PyInterpreterState */
	__u16 threads_head;      /* in PyInterpreterState: the first PyThreadState */
	__u16 tstate_next;
	__u16 tstate_thread_id;  /* pthread_self() of the thread */
	__u16 tstate_frame;      /* the current frame (3.10: PyFrameObject), or the _PyCFrame pointer */
	__u16 cframe_frame;      /* current_frame in _PyCFrame (3.11, 3.12), else PYTHON_NO_CFRAME */
	__u16 frame_previous;    /* 3.10: f_back */
	__u16 frame_code;        /* f_code / f_executable */
	__u16 frame_instr;       /* 3.10: f_lasti (int); 3.11, 3.12: prev_instr; 3.13: instr_ptr */
	__u16 frame_owner;       /* 3.11: is_entry; 3.12+: owner; 3.10: unused */
};

_Static_assert(sizeof(struct python_proc) == 56, "python_proc layout");
_Static_assert(sizeof(struct trace_header) == 48, "trace_header layout");
_Static_assert(sizeof(struct pid_mapping_key) == 16, "pid_mapping_key layout");
_Static_assert(sizeof(struct pid_mapping_value) == 64, "pid_mapping_value layout");
_Static_assert(sizeof(struct unwind_bucket) == 256, "unwind_bucket layout");
_Static_assert(sizeof(struct file_table_key) == 16, "file_table_key layout");
_Static_assert(sizeof(struct file_table_value) == 24, "file_table_value layout");
_Static_assert(sizeof(struct proc_vma) == 40, "proc_vma layout");
_Static_assert(sizeof(struct stack_header) == 56, "stack_header layout");
_Static_assert(sizeof(struct unwind_rule) == 4, "unwind_rule layout");
_Static_assert(sizeof(struct table_ref) == 16, "table_ref layout");
_Static_assert(sizeof(struct table_search_run) == 40, "table_search_run layout");
_Static_assert(sizeof(struct proc_event) == 40, "proc_event layout");
_Static_assert(sizeof(struct exec_event) == 48 + PATH_LEN, "exec_event layout");
_Static_assert(sizeof(struct vma_event) == 56, "vma_event layout");
_Static_assert(sizeof(struct proc_vmas) == 16 + PROC_VMA_SLOTS * 40 + 8, "proc_vmas layout");

#endif
