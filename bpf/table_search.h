/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The unwind tables in BPF: the `unwind_buckets` map and the search of a file's table for the
 * rule covering a file offset. The sampler includes it to walk stacks; table_search_test.bpf.c
 * includes it so BPF_PROG_TEST_RUN checks this very code against its Rust reference
 * (CompactTable::find_rule in src/unwind/compact.rs, which documents the layout and the
 * search step by step). Include after the libbpf headers and profiler.h.
 */
#ifndef PROFILER_TABLE_SEARCH_H
#define PROFILER_TABLE_SEARCH_H

/* Unwind tables of every loaded file, one bucket per KiB of text (resized by user space). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 16);
	__type(key, __u32);
	__type(value, struct unwind_bucket);
} unwind_buckets SEC(".maps");

/*
 * The rule of the row covering file offset `off` in `table`, or NULL: the offset is outside
 * the table's direct buckets, or a bucket is missing, or a redirect leads to another redirect.
 * A "no info" rule (kind UNWIND_NO_INFO) is a rule: it is returned. When `bucket` is not NULL,
 * it receives the unwind_buckets index of the bucket the rule was found in.
 */
static __always_inline struct unwind_rule *find_rule(const struct table_ref *table, __u64 off,
						     __u32 *bucket)
{
	if (off < table->base)
		return NULL;
	__u64 kib = (off - table->base) >> UNWIND_BUCKET_SHIFT;
	if (kib >= table->direct)
		return NULL;
	__u32 index = table->first + (__u32)kib;
	__u16 want = (((__u16)off & 1023) << UNWIND_KEY_RULE_BITS) | ((1 << UNWIND_KEY_RULE_BITS) - 1);
	for (int hop = 0; hop < 2; hop++) {
		struct unwind_bucket *b = bpf_map_lookup_elem(&unwind_buckets, &index);
		if (!b)
			return NULL;
		__u32 i = 0;
#pragma unroll
		for (int step = 32; step > 0; step >>= 1) {
			if (b->key[(i + step) & (UNWIND_KEYS - 1)] <= want)
				i += step;
		}
		struct unwind_rule *rule = &b->rule[b->key[i & (UNWIND_KEYS - 1)] & (UNWIND_RULES - 1)];
		if ((rule->kind & 0xf) != UNWIND_REDIRECT) {
			if (bucket)
				*bucket = index;
			return rule;
		}
		index = table->first + ((__u32)(__u8)rule->rbp | ((__u32)(__u16)rule->cfa << 8));
	}
	return NULL;
}

#endif
