// SPDX-License-Identifier: GPL-2.0
/*
 * The sampler: a perf_event program run on every CPU at the sampling frequency, plus the
 * process hooks (fork extends the PID filter, exec and whole-process exit are reported).
 *
 * User stacks come from frame pointers (bpf_get_stack with BPF_F_USER_STACK) for now; the
 * in-kernel .eh_frame unwinder replaces `collect_user_stack` later without changing the record.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "profiler.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by user space before load. */
const volatile __u32 filter_pids = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

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

static __always_inline bool wanted(__u32 tgid)
{
	if (!filter_pids)
		return true;
	__u8 *value = bpf_map_lookup_elem(&pid_filter, &tgid);
	return value && *value == FILTER_PROFILE;
}

SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (tid == 0)
		return 0; /* the idle task */
	count(COUNTER_SAMPLES);
	if (!wanted(tgid)) {
		count(COUNTER_FILTERED);
		return 0;
	}

	__u32 zero = 0;
	struct trace *t = bpf_map_lookup_elem(&scratch, &zero);
	if (!t)
		return 0;
	t->hdr.type = RECORD_TRACE;
	t->hdr.pid = tgid;
	t->hdr.tid = tid;
	t->hdr.cpu = bpf_get_smp_processor_id();
	t->hdr.ktime_ns = bpf_ktime_get_ns();
	t->hdr.flags = 0;
	bpf_get_current_comm(t->hdr.comm, sizeof(t->hdr.comm));

	struct task_struct *task = bpf_get_current_task_btf();
	bool kernel_thread = BPF_CORE_READ(task, flags) & PF_KTHREAD;
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

	long n_user = 0;
	if (kernel_thread) {
		t->hdr.flags |= TRACE_KERNEL_THREAD;
	} else {
		n_user = bpf_get_stack(ctx, &t->frames[n_kernel], MAX_USER_FRAMES * sizeof(__u64),
				       BPF_F_USER_STACK);
		if (n_user < 0) {
			count(COUNTER_USTACK_FAILED);
			t->hdr.flags |= TRACE_USTACK_FAILED;
			n_user = 0;
		}
		n_user /= sizeof(__u64);
	}
	if (n_user > MAX_USER_FRAMES)
		n_user = MAX_USER_FRAMES;

	t->hdr.n_kernel = n_kernel;
	t->hdr.n_user = n_user;
	__u64 size = sizeof(t->hdr) + (n_kernel + n_user) * sizeof(__u64);
	if (size > sizeof(*t))
		size = sizeof(*t);
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, t, size) == 0)
		count(COUNTER_SENT);
	else
		count(COUNTER_SEND_FAILED);
	return 0;
}

static __always_inline void send_proc_event(void *ctx, __u32 type, __u32 tgid)
{
	struct proc_event event = { .type = type, .pid = tgid, .ktime_ns = bpf_ktime_get_ns() };
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &event, sizeof(event)) != 0)
		count(COUNTER_EVENT_SEND_FAILED);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	if (!filter_pids)
		return 0;
	__u32 parent_tgid = parent->tgid;
	__u32 child_tgid = child->tgid;
	if (parent_tgid == child_tgid || !bpf_map_lookup_elem(&pid_filter, &parent_tgid))
		return 0;
	__u8 profile = FILTER_PROFILE;
	if (bpf_map_update_elem(&pid_filter, &child_tgid, &profile, BPF_ANY) != 0)
		count(COUNTER_FILTER_FULL);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *task)
{
	__u32 tgid = task->tgid;
	if (wanted(tgid))
		send_proc_event(ctx, RECORD_EXEC, tgid);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	/* do_exit() decrements signal->live before this tracepoint: zero means the last thread
	 * is leaving. Newer kernels also pass group_dead, older ones do not; this works on both. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* another thread of the process lives on */
	__u32 tgid = task->tgid;
	if (!wanted(tgid))
		return 0;
	send_proc_event(ctx, RECORD_EXIT, tgid);
	if (filter_pids)
		bpf_map_delete_elem(&pid_filter, &tgid);
	return 0;
}
