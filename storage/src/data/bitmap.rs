//! A fixed-length bit set, used for tombstones and per-modality skip masks.

/// `len` bits packed into `u64` words, least significant bit first. Bits past `len` in the
/// last word are always zero, so `words()` can be combined word-wise without masking.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitmap {
    words: Vec<u64>,
    len: usize,
}

impl Bitmap {
    /// `len` zero bits.
    pub fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// Builds a bitmap from words; bits past `len` are cleared. Returns `None` if `words`
    /// has the wrong length.
    pub fn from_words(mut words: Vec<u64>, len: usize) -> Option<Self> {
        if words.len() != len.div_ceil(64) {
            return None;
        }
        if !len.is_multiple_of(64)
            && let Some(last) = words.last_mut()
        {
            *last &= (1u64 << (len % 64)) - 1;
        }
        Some(Self { words, len })
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the bitmap has no bits at all (not whether none is set).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i`; `false` for `i >= len()`.
    pub fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Sets bit `i` (ignored past the end) and returns its previous value.
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len {
            return false;
        }
        let word = &mut self.words[i / 64];
        let mask = 1u64 << (i % 64);
        let was = *word & mask != 0;
        *word |= mask;
        was
    }

    /// The packed bits, `len().div_ceil(64)` words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Bit-wise OR of two bitmaps of equal length (the longer one's length otherwise).
    pub fn or(&self, other: &Bitmap) -> Bitmap {
        let (long, short) = if self.len >= other.len {
            (self, other)
        } else {
            (other, self)
        };
        let mut out = long.clone();
        for (w, o) in out.words.iter_mut().zip(&short.words) {
            *w |= o;
        }
        out
    }

    /// Bitmap with bit `i` set exactly where `self` has it clear.
    pub fn not(&self) -> Bitmap {
        let words = self.words.iter().map(|w| !w).collect();
        Bitmap::from_words(words, self.len).unwrap_or_else(|| Bitmap::new(self.len))
    }

    /// Indices of set bits, ascending.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count_and_tail_masking() {
        let mut b = Bitmap::new(70);
        assert!(!b.set(3));
        assert!(b.set(3));
        b.set(69);
        b.set(500);
        assert!(b.get(3) && b.get(69) && !b.get(4) && !b.get(500));
        assert_eq!(b.count_ones(), 2);
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![3, 69]);
        let n = b.not();
        assert_eq!(n.count_ones(), 68);
        assert_eq!(
            Bitmap::from_words(vec![u64::MAX; 2], 70)
                .unwrap()
                .count_ones(),
            70
        );
        assert!(Bitmap::from_words(vec![0; 3], 70).is_none());
    }
}
