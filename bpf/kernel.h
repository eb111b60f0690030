/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel types and constants the BPF programs use, declared by hand instead of a
 * generated 3 MB vmlinux.h. Structs marked preserve_access_index are relocated by libbpf
 * against the running kernel's BTF (CO-RE), so only the fields we touch need to exist here;
 * their order and the struct sizes do not matter. UAPI structs (program contexts) are ABI and
 * are spelled out exactly.
 */
#ifndef PROFILER_KERNEL_H
#define PROFILER_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LPM_TRIE = 11,
};

#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_F_USER_STACK (1ULL << 8)
#define BPF_F_CURRENT_CPU 0xffffffffULL

#define PF_EXITING 0x00000004
#define PF_KTHREAD 0x00200000
#define ENOENT 2
#define EBUSY 16

/* UAPI: arch/x86/include/uapi/asm/ptrace.h (x86_64). */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip,
		cs, flags, sp, ss;
};

/* UAPI: include/uapi/linux/bpf_perf_event.h */
struct bpf_perf_event_data {
	struct pt_regs regs;
	__u64 sample_period;
	__u64 addr;
};

struct signal_struct {
	struct { int counter; } live;
} __attribute__((preserve_access_index));

struct mm_struct {
	unsigned long start_code;
	unsigned long start_stack;
	unsigned long total_vm; /* pages mapped */
} __attribute__((preserve_access_index));

struct super_block {
	unsigned int s_dev;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	unsigned long vm_pgoff;
	struct file *vm_file;
	unsigned long vm_flags; /* in an anonymous union in newer kernels: CO-RE finds it there */
} __attribute__((preserve_access_index));

struct linux_binprm {
	struct file *file;
	const char *filename;
	const char *interp;
} __attribute__((preserve_access_index));

/* x86_64: the user fs base, which glibc points at the thread's TCB (pthread_self()). */
struct thread_struct {
	unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int flags;
	int pid;
	int tgid;
	struct task_struct *group_leader;
	__u64 start_boottime; /* ns since boot; /proc shows it in clock ticks */
	struct mm_struct *mm;
	struct signal_struct *signal;
	char comm[16];
	__u64 self_exec_id; /* execs in this line of processes: +1 per exec, copied at fork */
	struct thread_struct thread;
} __attribute__((preserve_access_index));

#endif
