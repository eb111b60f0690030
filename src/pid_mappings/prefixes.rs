//! Address range → LPM prefixes: the smallest set of aligned power-of-two blocks that covers a
//! mapping exactly, each a key of the `pid_mappings` trie.

use crate::layout::{consts, PidMappingKey};

/// Bits of PID in front of the address in a key.
const PID_BITS: u32 = consts::PID_MAPPING_KEY_BITS as u32 - 64;

/// One aligned block: `[start, start + 2^size_log2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub start: u64,
    pub size_log2: u32,
}

impl Block {
    /// The trie key for this block of `pid`'s address space.
    pub fn key(self, pid: u32) -> PidMappingKey {
        PidMappingKey::new(pid, self.start, PID_BITS + 64 - self.size_log2)
    }

    pub fn end(self) -> u128 {
        self.start as u128 + (1u128 << self.size_log2)
    }
}

/// Covers `[start, end)` with the fewest aligned blocks (at most ~2 per address bit).
pub fn cover(start: u64, end: u64) -> Vec<Block> {
    let mut blocks = Vec::new();
    let (mut at, end) = (start as u128, end as u128);
    while at < end {
        // The largest block aligned at `at` that still fits.
        let align = if at == 0 {
            64
        } else {
            at.trailing_zeros().min(64)
        };
        let mut size_log2 = align;
        while size_log2 > 0 && at + (1u128 << size_log2) > end {
            size_log2 -= 1;
        }
        blocks.push(Block {
            start: at as u64,
            size_log2,
        });
        at += 1u128 << size_log2;
    }
    blocks
}

/// The per-PID marker: the PID alone, matching every address no mapping covers.
pub fn marker_key(pid: u32) -> PidMappingKey {
    PidMappingKey::new(pid, 0, consts::PID_MAPPING_MARKER_PREFIX as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(blocks: &[Block]) -> Vec<(u128, u128)> {
        blocks.iter().map(|b| (b.start as u128, b.end())).collect()
    }

    fn check_exact(start: u64, end: u64) {
        let blocks = cover(start, end);
        let mut at = start as u128;
        for b in &blocks {
            assert_eq!(b.start as u128, at, "contiguous");
            assert_eq!(b.start as u128 % (1u128 << b.size_log2), 0, "aligned");
            at = b.end();
        }
        assert_eq!(at, end as u128, "ends exactly at the mapping's end");
        assert!(blocks.len() <= 128, "{} blocks", blocks.len());
    }

    #[test]
    fn aligned_ranges_are_one_block() {
        assert_eq!(
            cover(0x1000, 0x2000),
            vec![Block {
                start: 0x1000,
                size_log2: 12
            }]
        );
        assert_eq!(
            cover(0x10000, 0x20000),
            vec![Block {
                start: 0x10000,
                size_log2: 16
            }]
        );
    }

    #[test]
    fn unaligned_ranges_split_into_aligned_blocks() {
        assert_eq!(
            covered(&cover(0x1000, 0x4000)),
            vec![(0x1000, 0x2000), (0x2000, 0x4000)]
        );
        check_exact(0x55d0_c8a0_2000, 0x55d0_c8a0_5000);
        check_exact(0x7f12_3456_7000, 0x7f12_3499_9000);
        check_exact(1, 0xffff_ffff_ffff_ffff);
        check_exact(0, 1);
        assert!(cover(5, 5).is_empty());
    }

    #[test]
    fn keys_have_the_right_prefix_lengths() {
        let block = Block {
            start: 0x7f00_0000_0000,
            size_log2: 12,
        };
        let key = block.key(42);
        assert_eq!(key.prefixlen, 32 + 64 - 12);
        assert_eq!((key.pid(), key.addr()), (42, 0x7f00_0000_0000));
        assert_eq!(marker_key(42).prefixlen, 32);
        assert_eq!(
            Block {
                start: 0,
                size_log2: 64
            }
            .key(1)
            .prefixlen,
            32
        );
    }
}
