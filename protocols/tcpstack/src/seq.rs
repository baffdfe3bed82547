//! Sequence numbers with serial arithmetic (RFC 1982 style): every comparison is made on
//! the wrapping difference, so a connection whose numbers cross 2^32 behaves like any
//! other.

use std::fmt;

/// A TCP sequence number. Ordering is only meaningful between numbers less than 2^31
/// apart, which TCP windows guarantee.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seq(pub u32);

impl Seq {
    /// `self + n`, wrapping.
    pub fn plus(self, n: u32) -> Seq {
        Seq(self.0.wrapping_add(n))
    }

    /// `self - n`, wrapping.
    pub fn minus(self, n: u32) -> Seq {
        Seq(self.0.wrapping_sub(n))
    }

    /// Signed distance from `other` to `self` (positive when `self` is later).
    pub fn diff(self, other: Seq) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// Distance from `earlier` to `self`, for numbers known to be in order.
    pub fn since(self, earlier: Seq) -> u32 {
        self.0.wrapping_sub(earlier.0)
    }

    /// `self < other` in serial order.
    pub fn lt(self, other: Seq) -> bool {
        self.diff(other) < 0
    }

    /// `self <= other` in serial order.
    pub fn le(self, other: Seq) -> bool {
        self.diff(other) <= 0
    }

    /// `self > other` in serial order.
    pub fn gt(self, other: Seq) -> bool {
        self.diff(other) > 0
    }

    /// `self >= other` in serial order.
    pub fn ge(self, other: Seq) -> bool {
        self.diff(other) >= 0
    }

    /// `lo <= self < hi` in serial order.
    pub fn in_range(self, lo: Seq, hi: Seq) -> bool {
        self.ge(lo) && self.lt(hi)
    }

    /// The later of two numbers.
    pub fn max(self, other: Seq) -> Seq {
        if self.ge(other) {
            self
        } else {
            other
        }
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_around() {
        let a = Seq(u32::MAX - 10);
        let b = a.plus(20);
        assert_eq!(b, Seq(9));
        assert!(a.lt(b) && b.gt(a) && a.le(a) && b.ge(b));
        assert_eq!(b.since(a), 20);
        assert_eq!(a.diff(b), -20);
        assert!(Seq(5).in_range(a, b));
        assert!(!b.in_range(a, b));
        assert_eq!(a.max(b), b);
        assert_eq!(b.minus(20), a);
    }
}
