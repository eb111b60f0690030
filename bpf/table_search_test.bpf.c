// SPDX-License-Identifier: GPL-2.0
/*
 * A test harness, never attached: runs the sampler's table search (bpf/table_search.h) on one
 * (table, offset) pair per BPF_PROG_TEST_RUN, against this object's own unwind_buckets map,
 * so tests/table_search.rs can compare what BPF finds with the Rust reference on the same
 * tables. A syscall program: its context is the caller's struct table_search_run, which the
 * kernel copies in and back out.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include "profiler.h"
#include "table_search.h"

char LICENSE[] SEC("license") = "GPL";

SEC("syscall")
int search_table(struct table_search_run *run)
{
	struct table_ref table = run->table;
	__u32 bucket = 0;
	struct unwind_rule *rule = find_rule(&table, run->offset, &bucket);
	run->found = rule != NULL;
	run->bucket = rule ? bucket : 0;
	if (rule)
		run->rule = *rule;
	return 0;
}
