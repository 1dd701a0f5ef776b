//! The system's randomness, for keys and identifiers.

use std::io::{self, Read};

/// Fills `buf` from the kernel's random source (`/dev/urandom`, which never blocks
/// once the system has booted).
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| io::Error::new(e.kind(), format!("reading /dev/urandom: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_draws_differ() {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        super::fill(&mut a).unwrap();
        super::fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
