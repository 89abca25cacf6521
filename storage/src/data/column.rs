//! A borrowed, typed view of one vector tier of a segment or of the memtable: what the search
//! kernels scan.

use crate::schema::ElemType;

/// Rows of equal-length vectors laid out back to back, `stride` bytes apart.
///
/// `bytes` starts 64-byte aligned and `stride` (padded to 64 bytes, or packed: see
/// [`file_stride`](crate::file_stride)) is a multiple of the element size, so a row can
/// be reinterpreted as `&[f32]`, `&[half::f16]` or `&[i8]` without copying.
#[derive(Debug, Clone, Copy)]
pub struct VectorColumn<'a> {
    elem: ElemType,
    dim: usize,
    stride: usize,
    bytes: &'a [u8],
    /// Per-row dequantisation scale; present exactly when `elem` is `I8`.
    scales: Option<&'a [f32]>,
}

impl<'a> VectorColumn<'a> {
    /// Wraps raw row bytes. Returns `None` if the layout is inconsistent (a corrupt file must
    /// never become an out-of-bounds read).
    pub fn new(
        elem: ElemType,
        dim: usize,
        stride: usize,
        bytes: &'a [u8],
        scales: Option<&'a [f32]>,
    ) -> Option<Self> {
        let row_bytes = dim.checked_mul(elem.size())?;
        if stride < row_bytes || !stride.is_multiple_of(elem.size()) || stride == 0 {
            return None;
        }
        if !bytes.len().is_multiple_of(stride)
            || !(bytes.as_ptr() as usize).is_multiple_of(elem.size())
        {
            return None;
        }
        let rows = bytes.len() / stride;
        match (elem, scales) {
            (ElemType::I8, Some(s)) if s.len() == rows => {}
            (ElemType::I8, _) => return None,
            (_, None) => {}
            (_, Some(_)) => return None,
        }
        Some(Self {
            elem,
            dim,
            stride,
            bytes,
            scales,
        })
    }

    /// Wraps parts already checked by the caller (a validated file or an owned column).
    pub(crate) fn from_parts(
        elem: ElemType,
        dim: usize,
        stride: usize,
        bytes: &'a [u8],
        scales: Option<&'a [f32]>,
    ) -> Self {
        Self {
            elem,
            dim,
            stride,
            bytes,
            scales,
        }
    }

    /// Element type of the stored values.
    pub fn elem(&self) -> ElemType {
        self.elem
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes from one row's start to the next: padded to a multiple of 64, or packed (see
    /// [`file_stride`](crate::file_stride)).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.stride
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// All rows' bytes, including padding between rows.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Per-row dequantisation scales (`I8` only): `value = i8 as f32 * scales[row]`.
    pub fn scales(&self) -> Option<&'a [f32]> {
        self.scales
    }

    /// The `dim * elem.size()` bytes of row `row`, without padding.
    pub fn row_bytes(&self, row: usize) -> &'a [u8] {
        let start = row * self.stride;
        &self.bytes[start..start + self.dim * self.elem.size()]
    }

    /// The byte offset of the first non-finite value of row `row`, in the layout of a vector
    /// file's body (rows of `stride` bytes, zeros to a multiple of 64, then for `I8` one `f32`
    /// scale per row; see FORMAT.md); `None` if the row is finite. hivlp stores only finite values, so `Some`
    /// means the bytes were damaged.
    pub fn non_finite_offset(&self, row: usize) -> Option<u64> {
        let start = (row * self.stride) as u64;
        let raw = self.row_bytes(row);
        let at = |index: usize| start + (index * self.elem.size()) as u64;
        match self.elem {
            ElemType::F32 => raw
                .chunks_exact(4)
                .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
                .map(at),
            ElemType::F16 => raw
                .chunks_exact(2)
                .position(|b| !half::f16::from_le_bytes([b[0], b[1]]).is_finite())
                .map(at),
            ElemType::I8 => {
                let scale = self.scales.map_or(1.0, |s| s[row]);
                let scales_at =
                    crate::rows_region_len(self.len(), self.stride).unwrap_or(self.bytes.len());
                (!scale.is_finite()).then(|| (scales_at + row * 4) as u64)
            }
        }
    }

    /// Row `row` converted to `f32` (dequantised for `I8`). For tests, re-ranking and export;
    /// scans read the typed rows directly.
    pub fn row_to_f32(&self, row: usize, out: &mut Vec<f32>) {
        let raw = self.row_bytes(row);
        out.clear();
        match self.elem {
            ElemType::F32 => out.extend(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            ElemType::F16 => out.extend(
                raw.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            ElemType::I8 => {
                let scale = self.scales.map_or(1.0, |s| s[row]);
                out.extend(raw.iter().map(|&b| b as i8 as f32 * scale));
            }
        }
    }
}
