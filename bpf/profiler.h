/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Records and maps shared between the BPF programs and user space. This header is the one
 * definition of every layout that crosses the boundary; src/bpf/layout.rs mirrors it and
 * asserts the sizes and offsets at compile time, and the _Static_asserts below pin them here.
 */
#ifndef PROFILER_SHARED_H
#define PROFILER_SHARED_H

#define COMM_LEN 16
#define MAX_KERNEL_FRAMES 127
#define MAX_USER_FRAMES 127
#define MAX_FRAMES (MAX_KERNEL_FRAMES + MAX_USER_FRAMES)
#define MAX_FILTER_PIDS 65536

/* pid_filter values */
#define FILTER_PROFILE 1          /* sample this process and follow its children */
#define FILTER_FOLLOW_CHILDREN 2  /* do not sample it, but profile the children it forks */

/* First field of every record in the `events` perf buffer. */
enum record_type {
	RECORD_TRACE = 1,
	RECORD_EXEC = 2,
	RECORD_EXIT = 3,
};

/* trace_header.flags */
#define TRACE_KERNEL_MODE (1U << 0)   /* the sample interrupted kernel code */
#define TRACE_KERNEL_THREAD (1U << 1) /* a kernel thread: no user stack */
#define TRACE_KSTACK_FAILED (1U << 2) /* bpf_get_stack failed for the kernel stack */
#define TRACE_USTACK_FAILED (1U << 3) /* bpf_get_stack failed for the user stack */

/* A sampled stack: this header, then n_kernel kernel addresses (leaf first), then n_user user
 * addresses (leaf first), each a u64. Only the used part is sent. */
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
	__u64 frames[MAX_FRAMES];
};

/* A process event: exec (address space replaced) or whole-process exit. */
struct proc_event {
	__u32 type;     /* RECORD_EXEC or RECORD_EXIT */
	__u32 pid;
	__u64 ktime_ns;
};

/* Indexes of the per-CPU `counters` array. */
enum counter {
	COUNTER_SAMPLES = 0,         /* perf_event program runs that were not idle */
	COUNTER_FILTERED = 1,        /* samples skipped by the PID filter */
	COUNTER_SENT = 2,            /* trace records handed to the perf buffer */
	COUNTER_SEND_FAILED = 3,     /* bpf_perf_event_output failed (buffer full): lost */
	COUNTER_KSTACK_FAILED = 4,
	COUNTER_USTACK_FAILED = 5,
	COUNTER_EVENT_SEND_FAILED = 6, /* process events lost */
	COUNTER_FILTER_FULL = 7,       /* a forked child could not be added to the PID filter */
	COUNTER_MAX = 8,
};

_Static_assert(sizeof(struct trace_header) == 48, "trace_header layout");
_Static_assert(sizeof(struct trace) == 48 + 8 * MAX_FRAMES, "trace layout");
_Static_assert(sizeof(struct proc_event) == 16, "proc_event layout");

#endif
