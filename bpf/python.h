/* SPDX-License-Identifier: GPL-2.0 */
/*
 * CPython frames, walked in the kernel next to the native ones (issue 13). Included by
 * sampler.bpf.c after count() and before struct unwind_state, which holds a struct python_walk.
 *
 * User space (src/python/) marks each CPython 3.10-3.13 process in python_procs with the
 * offsets of the interpreter's structures for its version, where `_PyRuntime` is and the range
 * of `_PyEval_EvalFrameDefault`. For a sample of such a process:
 *
 * 1. python_begin finds the sampled thread's PyThreadState: _PyRuntime.interpreters.head, then
 *    that interpreter's thread list, matched on `thread_id`, which CPython sets to
 *    pthread_self(), on x86_64 glibc the thread's fs base (task->thread.fsbase). This works the
 *    same for every version (3.12+ also keep it in the TLS variable _Py_tss_tstate, whose
 *    static TLS offset is not known for a dlopen'ed libpython, so the list is used throughout).
 *    Only the main interpreter is walked, at most PYTHON_MAX_THREADS threads.
 *    Its current frame: 3.10 tstate->frame (a PyFrameObject), 3.11 and 3.12
 *    tstate->cframe->current_frame, 3.13 tstate->current_frame (a _PyInterpreterFrame).
 *
 * 2. The native walk runs as before. Each time it reaches a frame inside
 *    _PyEval_EvalFrameDefault, python_frame first records, one per loop iteration, the
 *    interpreter frames that activation of the eval loop runs, innermost first, then lets the
 *    native frame be recorded. So Python -> C -> Python stays in order: the Python frames
 *    sit right above the eval loop running them. The frames of one activation end:
 *      3.10: after one frame (each PyFrameObject has its own eval loop call);
 *      3.11: after the frame with `is_entry` set;
 *      3.12, 3.13: at the C-stack entry frame (owner == FRAME_OWNED_BY_CSTACK), not recorded.
 *    A Python frame is recorded as (code object address, instruction position) with
 *    FRAME_PYTHON; user space reads the code object (name, file, line table).
 *
 * Python frames count against MAX_USER_FRAMES like native ones, so the work per sample stays
 * bounded by the walk's loop. A native-only process pays one array lookup per sample, and,
 * while some CPython process is marked, one hash lookup.
 */
#ifndef PROFILER_PYTHON_H
#define PROFILER_PYTHON_H

/* enum _frameowner (3.12, 3.13) */
#define PY_FRAME_OWNED_BY_CSTACK 3

/* The Python side of one walk (a member of struct unwind_state). */
struct python_walk {
	__u64 frame;      /* the next interpreter frame to record; 0: none */
	__u64 eval_start; /* _PyEval_EvalFrameDefault in this process; 0: not a Python walk */
	__u64 eval_end;
	__u64 done_sp;    /* sp of the eval-loop frame whose Python frames are all recorded */
	__u16 previous;   /* offsets in the frame, from struct python_proc */
	__u16 code;
	__u16 instr;
	__u16 owner;
	__u32 minor;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct python_proc);
} python_procs SEC(".maps");

/* Entry 0: how many entries python_procs holds (user space keeps it), so samples skip the
 * hash lookup while no CPython process is marked. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} python_enabled SEC(".maps");

/* Bytes of an interpreter frame read at once: every field the walk uses lies in them (the
 * furthest, 3.10's f_lasti, ends at 100). */
#define PY_FRAME_BYTES 104

struct py_frame_buf {
	__u8 b[PY_FRAME_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct py_frame_buf);
} python_scratch SEC(".maps");

/* The 8 bytes at `off` of a frame read into `buf`. */
static __always_inline __u64 py_field(struct py_frame_buf *buf, __u32 off)
{
	off &= 127;
	if (off > PY_FRAME_BYTES - 8)
		return 0;
	return *(__u64 *)&buf->b[off];
}

static __always_inline bool py_read(__u64 *out, __u64 addr)
{
	*out = 0;
	return bpf_probe_read_user(out, sizeof(*out), (void *)addr) == 0;
}

/* Finds the current interpreter frame of the thread whose pthread_self() is `fsbase`. A
 * global function: verified once, on its own. */
__noinline int python_find_frame(struct python_walk *py, __u32 pid, __u64 start_ns, __u64 fsbase)
{
	if (!py)
		return 0;
	struct python_proc *proc = bpf_map_lookup_elem(&python_procs, &pid);
	if (!proc || proc->start_ns != start_ns)
		return 0;
	count(COUNTER_PYTHON_SAMPLES);
	__u64 interp = 0, tstate = 0, thread_id = 0, frame = 0;
	if (!py_read(&interp, proc->runtime + proc->interpreters_head) || !interp ||
	    !py_read(&tstate, interp + proc->threads_head)) {
		count(COUNTER_PYTHON_READ_FAULT);
		return 0;
	}
	bool found = false;
	for (int i = 0; i < PYTHON_MAX_THREADS; i++) {
		if (!tstate || !py_read(&thread_id, tstate + proc->tstate_thread_id))
			break;
		if (thread_id == fsbase) {
			found = true;
			break;
		}
		if (!py_read(&tstate, tstate + proc->tstate_next))
			break;
	}
	if (!found) {
		count(COUNTER_PYTHON_NO_THREAD);
		return 0;
	}
	if (!py_read(&frame, tstate + proc->tstate_frame)) {
		count(COUNTER_PYTHON_READ_FAULT);
		return 0;
	}
	if (frame && proc->cframe_frame != PYTHON_NO_CFRAME &&
	    !py_read(&frame, frame + proc->cframe_frame)) {
		count(COUNTER_PYTHON_READ_FAULT);
		return 0;
	}
	if (!frame)
		return 0; /* the thread runs no Python code now */
	py->frame = frame;
	py->eval_start = proc->eval_start;
	py->eval_end = proc->eval_end;
	py->done_sp = 0;
	py->previous = proc->frame_previous;
	py->code = proc->frame_code;
	py->instr = proc->frame_instr;
	py->owner = proc->frame_owner;
	py->minor = proc->minor;
	return 1;
}

/* Called once per sample before the walk: prepares `py` when the process is marked. */
static __always_inline void python_begin(struct python_walk *py, __u32 pid, __u64 start_ns,
					 struct task_struct *task)
{
	__u32 zero = 0;
	__u32 *enabled = bpf_map_lookup_elem(&python_enabled, &zero);
	if (!enabled || !*enabled)
		return;
	python_find_frame(py, pid, start_ns, BPF_CORE_READ(task, thread.fsbase));
}

/*
 * Called for each native frame before it is recorded (`pc` is the address looked up, `sp`
 * the frame's stack pointer). When the frame is in the eval loop and the interpreter frames
 * it runs are not all recorded yet, records the next one into t->frames[base], [base + 1] and
 * returns 1: the native frame waits for a later iteration. Returns 0 when the native frame
 * is recorded now.
 */
__noinline int python_frame(struct python_walk *py, struct trace *t, __u32 base, __u64 pc,
			    __u64 sp)
{
	if (!py || !t || !py->eval_start || pc < py->eval_start || pc >= py->eval_end ||
	    sp == py->done_sp)
		return 0;
	__u64 frame = py->frame;
	if (!frame) {
		/* An eval loop on the native stack with no interpreter frame left for it. */
		count(COUNTER_PYTHON_MISMATCH);
		py->eval_start = 0;
		return 0;
	}
	__u32 minor = py->minor, zero = 0;
	struct py_frame_buf *buf = bpf_map_lookup_elem(&python_scratch, &zero);
	if (!buf)
		return 0;
	/* One read for the whole frame header rather than one per field. */
	if (bpf_probe_read_user(buf->b, sizeof(buf->b), (void *)frame) != 0)
		goto fault;
	__u32 at = py->owner & 127;
	__u8 owner = minor >= 11 && at < PY_FRAME_BYTES ? buf->b[at] : 0;
	__u64 previous = py_field(buf, py->previous);
	if (minor >= 12 && owner == PY_FRAME_OWNED_BY_CSTACK) {
		/* The entry frame of this eval loop call: its frames are all out. */
		py->frame = previous;
		py->done_sp = sp;
		return 0;
	}
	__u64 code = py_field(buf, py->code), instr = py_field(buf, py->instr);
	/* 3.10: f_lasti, an int counting code units; later: a pointer into the code object. */
	__u32 position = minor == 10 ? (__u32)instr : (__u32)(instr - code);
	base &= 2047;
	if (base > MAX_FRAME_WORDS)
		return 0;
	t->frames[base] = code;
	t->frames[base + 1] = position | ((__u64)FRAME_PYTHON << 32);
	count(COUNTER_PYTHON_FRAMES);
	py->frame = previous;
	if (minor == 10 || (minor == 11 && owner))
		py->done_sp = sp; /* one frame per call (3.10); the entry frame (3.11) */
	return 1;
fault:
	count(COUNTER_PYTHON_READ_FAULT);
	py->eval_start = 0;
	return 0;
}

/* The state of one python_tail walk (bpf_loop's context). */
struct python_tail_walk {
	struct python_walk *py;
	struct trace *t;
	__u32 base;  /* the word of the next entry */
	__u32 left;  /* entries still allowed */
	__u32 n;     /* entries written */
	__u32 _pad;
};

static __always_inline void tail_put(struct python_tail_walk *w, __u64 address, __u64 value)
{
	__u32 at = w->base & 2047;
	if (at > MAX_FRAME_WORDS || !w->left)
		return;
	w->t->frames[at] = address;
	w->t->frames[at + 1] = value;
	w->base += 2;
	w->left--;
	w->n++;
}

/* One interpreter frame of the tail; a bpf_loop callback (1 ends the loop). */
static long python_tail_step(__u32 i, struct python_tail_walk *w)
{
	struct python_walk *py = w->py;
	__u64 frame = py->frame;
	if (!frame || w->left < 2)
		return 1;
	__u32 zero = 0;
	struct py_frame_buf *buf = bpf_map_lookup_elem(&python_scratch, &zero);
	if (!buf)
		return 1;
	if (bpf_probe_read_user(buf->b, sizeof(buf->b), (void *)frame) != 0) {
		count(COUNTER_PYTHON_READ_FAULT);
		return 1;
	}
	__u32 minor = py->minor, at = py->owner & 127;
	__u8 owner = minor >= 11 && at < PY_FRAME_BYTES ? buf->b[at] : 0;
	py->frame = py_field(buf, py->previous);
	if (minor >= 12 && owner == PY_FRAME_OWNED_BY_CSTACK) {
		tail_put(w, 0, (__u64)FRAME_PY_SPLIT << 32);
		return 0;
	}
	__u64 code = py_field(buf, py->code), instr = py_field(buf, py->instr);
	__u32 position = minor == 10 ? (__u32)instr : (__u32)(instr - code);
	tail_put(w, code, position | ((__u64)(FRAME_PYTHON | FRAME_PY_LATER) << 32));
	count(COUNTER_PYTHON_FRAMES);
	if (minor == 10 || (minor == 11 && owner))
		tail_put(w, 0, (__u64)FRAME_PY_SPLIT << 32);
	return 0;
}

/*
 * After a walk cut short for want of a table (user space finishes it from a stack copy):
 * records the interpreter frames the native walk did not reach, from word `base` on, at most
 * `room` entries (see FRAME_PY_EVAL). Returns the entries written.
 */
__noinline int python_tail(struct python_walk *py, struct trace *t, __u32 base, __u32 room)
{
	if (!py || !t || !py->eval_start || !py->frame || room < 3)
		return 0;
	if (room > PYTHON_TAIL_ENTRIES)
		room = PYTHON_TAIL_ENTRIES;
	struct python_tail_walk w = { .py = py, .t = t, .base = base, .left = room };
	tail_put(&w, py->eval_start, (py->eval_end - py->eval_start) | ((__u64)FRAME_PY_EVAL << 32));
	bpf_loop(PYTHON_TAIL_ENTRIES, python_tail_step, &w, 0);
	return w.n;
}

#endif
