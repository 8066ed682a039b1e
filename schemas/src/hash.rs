//! FNV-1a: the stable hash behind lead ids, partitioning and hashed
//! categories. Stable across processes, builds and languages, unlike std's
//! hasher, so the same input lands in the same place everywhere.

/// 32-bit FNV-1a of `bytes`.
pub fn fnv1a32(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// 64-bit FNV-1a of `s`.
pub fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a test vectors.
    #[test]
    fn matches_the_reference_vectors() {
        assert_eq!(fnv1a32(*b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(*b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(*b"foobar"), 0xbf9c_f968);
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64("foobar"), 0x8594_4171_f739_67e8);
    }
}
