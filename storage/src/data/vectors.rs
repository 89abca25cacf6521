//! Conversion of `f32` input vectors to stored element types, and 64-byte aligned in-memory
//! columns (the memtable's equivalent of a mapped vector file).

use crate::data::column::VectorColumn;
use crate::schema::{ElemType, Tier};

/// Alignment of every in-memory column and of the start of a vector file's rows and of its
/// `i8` scales.
pub const ROW_ALIGN: usize = 64;

/// Bytes from one row's start to the next in memtable columns and fine vector files (and in
/// the coarse files of databases written before coarse rows were packed): the row rounded up
/// to [`ROW_ALIGN`]. Fine rows are read a few hundred per query, so padding costs nothing.
pub fn padded_stride(elem: ElemType, dim: usize) -> usize {
    (dim * elem.size()).div_ceil(ROW_ALIGN).max(1) * ROW_ALIGN
}

/// Bytes per row of the coarse vector files written now: the row's own size, no padding. The
/// coarse scan streams every row of the collection, and padding a 16-d `i8` row to 64 bytes
/// would quadruple the bytes it reads; the scan kernels' loads need no alignment, and every
/// element stays aligned to its size because the rows start 64-byte aligned.
pub fn packed_stride(elem: ElemType, dim: usize) -> usize {
    (dim * elem.size()).max(elem.size())
}

/// The stride a vector file of `tier` is written with: packed for coarse, padded for fine.
pub fn file_stride(tier: Tier, elem: ElemType, dim: usize) -> usize {
    match tier {
        Tier::Coarse => packed_stride(elem, dim),
        Tier::Fine => padded_stride(elem, dim),
    }
}

/// Bytes of a vector file's rows region: `rows × stride` rounded up to [`ROW_ALIGN`] (zero
/// padded), so the `i8` scales that follow start aligned whatever the stride. `None` on
/// overflow (a corrupt descriptor).
pub fn rows_region_len(rows: usize, stride: usize) -> Option<usize> {
    rows.checked_mul(stride)?
        .checked_next_multiple_of(ROW_ALIGN)
}

/// Encodes `values` as `elem` into `out` (exactly `values.len() * elem.size()` bytes) and
/// returns the row's dequantisation scale (`I8` only: `max|x| / 127`, 0 for an all-zero row).
///
/// Deterministic, so re-encoding the same input always gives the same bytes.
pub fn encode_row(elem: ElemType, values: &[f32], out: &mut [u8]) -> f32 {
    match elem {
        ElemType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(values) {
                o.copy_from_slice(&v.to_le_bytes());
            }
            0.0
        }
        ElemType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
            }
            0.0
        }
        ElemType::I8 => quantize_i8(values, bytemuck::cast_slice_mut(out)),
    }
}

/// Symmetric `i8` quantisation, the one used for stored rows and for queries: writes
/// `round(v / scale)` into `out` and returns `scale = max|v| / 127` (0 for an all-zero input,
/// which is written as zeros), so `v[j] ≈ out[j] as f32 * scale`.
///
/// ```
/// let mut q = [0i8; 3];
/// let scale = hivlp_storage::quantize_i8(&[0.5, -1.0, 0.25], &mut q);
/// assert_eq!(q, [64, -127, 32]);
/// assert_eq!(scale, 1.0 / 127.0);
/// ```
pub fn quantize_i8(values: &[f32], out: &mut [i8]) -> f32 {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = max / 127.0;
    for (o, v) in out.iter_mut().zip(values) {
        *o = if scale > 0.0 {
            (v / scale).round().clamp(-127.0, 127.0) as i8
        } else {
            0
        };
    }
    scale
}

/// Euclidean length, accumulated in `f64` so long or large vectors lose no precision.
pub fn l2_norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Scales `v` to unit length, the normalisation of cosine databases and of cosine models'
/// outputs; returns `false` (leaving `v` unchanged) for a zero vector.
///
/// A vector already of unit length to `f32` precision (within [`UNIT_NORM_TOLERANCE`]) is
/// left exactly as it is, so normalising is idempotent: vectors read back from a cosine
/// database and inserted again (an Arrow round trip, a copy) keep their bits.
///
/// ```
/// let mut v = [3.0f32, 4.0];
/// assert!(hivlp_storage::l2_normalize(&mut v));
/// assert_eq!(v, [0.6, 0.8]);
/// let before = v;
/// assert!(hivlp_storage::l2_normalize(&mut v));
/// assert_eq!(v, before);
/// assert!(!hivlp_storage::l2_normalize(&mut [0.0f32; 2]));
/// ```
pub fn l2_normalize(v: &mut [f32]) -> bool {
    let norm = l2_norm(v);
    if norm == 0.0 {
        return false;
    }
    if (norm - 1.0).abs() > UNIT_NORM_TOLERANCE {
        v.iter_mut()
            .for_each(|x| *x = (f64::from(*x) / norm) as f32);
    }
    true
}

/// How far from 1 the norm of a normalised `f32` vector may be: rounding each element to `f32`
/// moves the norm by at most about one `f32` epsilon; two leave a margin.
pub const UNIT_NORM_TOLERANCE: f64 = 2.0 * f32::EPSILON as f64;

/// A heap buffer whose first byte is 64-byte aligned (the allocation is over-sized by
/// [`ROW_ALIGN`] and the slice starts at the first aligned byte).
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    data: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> Self {
        let data = vec![0u8; len + ROW_ALIGN];
        let start = data.as_ptr().align_offset(ROW_ALIGN).min(ROW_ALIGN);
        Self { data, start, len }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.start + self.len]
    }
}

/// An owned column of `rows` vectors, laid out exactly like a vector file's body.
#[derive(Debug)]
pub(crate) struct OwnedColumn {
    elem: ElemType,
    dim: usize,
    stride: usize,
    buf: AlignedBuf,
    /// One per row for `I8`, empty otherwise.
    scales: Vec<f32>,
}

impl OwnedColumn {
    /// `rows` all-zero rows.
    pub fn zeroed(elem: ElemType, dim: usize, rows: usize) -> Self {
        let stride = padded_stride(elem, dim);
        Self {
            elem,
            dim,
            stride,
            buf: AlignedBuf::zeroed(rows * stride),
            scales: if elem == ElemType::I8 {
                vec![0.0; rows]
            } else {
                Vec::new()
            },
        }
    }

    /// Encodes `values` (already validated: `dim` finite values) into row `row`.
    pub fn set_f32(&mut self, row: usize, values: &[f32]) {
        let n = self.dim * self.elem.size();
        let start = row * self.stride;
        let scale = encode_row(
            self.elem,
            values,
            &mut self.buf.as_mut_slice()[start..start + n],
        );
        if let Some(s) = self.scales.get_mut(row) {
            *s = scale;
        }
    }

    /// Copies an already encoded row (bit-exact).
    pub fn set_raw(&mut self, row: usize, bytes: &[u8], scale: f32) {
        let start = row * self.stride;
        self.buf.as_mut_slice()[start..start + bytes.len()].copy_from_slice(bytes);
        if let Some(s) = self.scales.get_mut(row) {
            *s = scale;
        }
    }

    pub fn column(&self) -> VectorColumn<'_> {
        let scales = (self.elem == ElemType::I8).then_some(&self.scales[..]);
        VectorColumn::from_parts(
            self.elem,
            self.dim,
            self.stride,
            self.buf.as_slice(),
            scales,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_aligned_or_packed() {
        assert_eq!(padded_stride(ElemType::F32, 1), 64);
        assert_eq!(padded_stride(ElemType::F32, 16), 64);
        assert_eq!(padded_stride(ElemType::F32, 17), 128);
        assert_eq!(padded_stride(ElemType::I8, 64), 64);
        assert_eq!(padded_stride(ElemType::F16, 33), 128);
        assert_eq!(packed_stride(ElemType::I8, 16), 16);
        assert_eq!(packed_stride(ElemType::F16, 33), 66);
        assert_eq!(file_stride(Tier::Coarse, ElemType::F32, 3), 12);
        assert_eq!(file_stride(Tier::Fine, ElemType::F32, 3), 64);
        assert_eq!(rows_region_len(3, 15), Some(64));
        assert_eq!(rows_region_len(2, 64), Some(128));
        assert_eq!(rows_region_len(0, 16), Some(0));
        assert_eq!(rows_region_len(usize::MAX, 2), None);
    }

    #[test]
    fn owned_column_round_trips() {
        for elem in [ElemType::F32, ElemType::F16, ElemType::I8] {
            let mut c = OwnedColumn::zeroed(elem, 3, 2);
            c.set_f32(1, &[1.0, -0.5, 0.25]);
            let col = c.column();
            assert_eq!(col.bytes().as_ptr() as usize % ROW_ALIGN, 0);
            let mut out = Vec::new();
            col.row_to_f32(1, &mut out);
            for (a, b) in out.iter().zip([1.0, -0.5, 0.25]) {
                assert!((a - b).abs() < 0.01, "{elem:?}: {a} vs {b}");
            }
            col.row_to_f32(0, &mut out);
            assert_eq!(out, vec![0.0; 3]);
        }
    }
}
