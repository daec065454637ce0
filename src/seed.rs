//! Seeds: every random stream in byzmtl is derived from the topology's seed.
//!
//! A node, a Byzantine node's round, a shard split: each draws from its own stream whose seed
//! is a hash of the topology's seed and the stream's coordinates. The same topology therefore
//! gives the same numbers whether its nodes run as separate processes or inside one.

use rand::SeedableRng;
use rand::rngs::SmallRng;

/// What a random stream is for, so that two streams with the same coordinates never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// A task's data: measurements, batches, splits and initial model.
    Task = 1,
    /// A Byzantine node's crafted models.
    Attack = 2,
    /// Topology generation.
    Topology = 3,
}

/// Mixes a 64-bit value (splitmix64's finaliser).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of the stream `stream` at coordinates `parts` under the topology seed `seed`.
pub fn derive(seed: u64, stream: Stream, parts: &[u64]) -> u64 {
    let mut h = mix(seed ^ 0x9e37_79b9_7f4a_7c15);
    h = mix(h ^ stream as u64);
    for &p in parts {
        h = mix(h.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ p);
    }
    h
}

/// A fast generator for the stream `stream` at `parts`.
pub fn rng(seed: u64, stream: Stream, parts: &[u64]) -> SmallRng {
    SmallRng::seed_from_u64(derive(seed, stream, parts))
}

/// A stable 64-bit hash of a string, for seeding streams keyed by node ids.
pub fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_and_repeat() {
        assert_eq!(derive(7, Stream::Task, &[3]), derive(7, Stream::Task, &[3]));
        assert_ne!(derive(7, Stream::Task, &[3]), derive(7, Stream::Task, &[4]));
        assert_ne!(
            derive(7, Stream::Task, &[3]),
            derive(7, Stream::Attack, &[3])
        );
        assert_ne!(derive(7, Stream::Task, &[3]), derive(8, Stream::Task, &[3]));
        assert_ne!(
            derive(7, Stream::Task, &[1, 2]),
            derive(7, Stream::Task, &[2, 1])
        );
    }
}
