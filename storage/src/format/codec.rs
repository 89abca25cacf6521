//! Byte-level building blocks shared by every file: the footer and a bounds-checked decoder
//! whose every failure is a [`CorruptionError`] naming file and offset.

use std::path::Path;

use crate::error::CorruptionError;

/// How much of a file is checked when it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyLevel {
    /// Footer and lengths of every file; full crc32 of the small files (manifest, metadata,
    /// tombstones, WAL records) but not of the vector files. Opening is then proportional to
    /// the number of rows, not to the bytes of vectors.
    #[default]
    Cheap,
    /// Also the crc32 of every vector file body (reads every byte once).
    Full,
}

/// Size of the footer that ends every immutable file.
pub const FOOTER_LEN: usize = 24;
/// Last four bytes of every immutable file.
pub const FOOTER_MAGIC: [u8; 4] = *b"HVLP";
/// Format version written into every footer; files of another version are refused.
pub const FORMAT_VERSION: u32 = 2;

/// What kind of file a footer belongs to (its first four bytes), so that one file renamed
/// as another is caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Vectors,
    Meta,
    Tombstones,
    Manifest,
    /// A segment's list of field columns, `seg-<id>.fields`.
    FieldDirectory,
    /// One field column, `seg-<id>.field-<n>`.
    FieldColumn,
    /// The partitions of one modality, `seg-<id>.<modality>.parts`.
    Partitions,
}

impl FileKind {
    fn tag(self) -> [u8; 4] {
        match self {
            FileKind::Vectors => *b"VECS",
            FileKind::Meta => *b"META",
            FileKind::Tombstones => *b"TOMB",
            FileKind::Manifest => *b"MANI",
            FileKind::FieldDirectory => *b"FDIR",
            FileKind::FieldColumn => *b"FCOL",
            FileKind::Partitions => *b"PART",
        }
    }
}

/// The footer for `body`: `[kind 4][version u32][body_len u64][crc32 u32][magic 4]`,
/// little-endian.
pub(crate) fn footer(kind: FileKind, body_len: u64, crc: u32) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[0..4].copy_from_slice(&kind.tag());
    f[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    f[8..16].copy_from_slice(&body_len.to_le_bytes());
    f[16..20].copy_from_slice(&crc.to_le_bytes());
    f[20..24].copy_from_slice(&FOOTER_MAGIC);
    f
}

/// Checks the footer of a whole file's bytes and returns the body. The crc is checked when
/// `check_crc` is set.
pub(crate) fn check_footer<'a>(
    bytes: &'a [u8],
    kind: FileKind,
    file: &Path,
    check_crc: bool,
) -> Result<&'a [u8], CorruptionError> {
    let corrupt = |offset: usize, what: String| CorruptionError::new(file, offset as u64, what);
    if bytes.len() < FOOTER_LEN {
        return Err(corrupt(
            0,
            format!(
                "file is {} bytes, shorter than its {FOOTER_LEN}-byte footer",
                bytes.len()
            ),
        ));
    }
    let at = bytes.len() - FOOTER_LEN;
    let f = &bytes[at..];
    if f[20..24] != FOOTER_MAGIC {
        return Err(corrupt(at + 20, "bad footer magic".into()));
    }
    if f[0..4] != kind.tag() {
        return Err(corrupt(
            at,
            format!("footer says {:?}, expected a {kind:?} file", &f[0..4]),
        ));
    }
    let version = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(
            at + 4,
            format!("format version {version}, this build reads {FORMAT_VERSION}"),
        ));
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&f[8..16]);
    let body_len = u64::from_le_bytes(len8);
    if body_len != at as u64 {
        return Err(corrupt(
            at + 8,
            format!("footer records a {body_len}-byte body, the file holds {at}"),
        ));
    }
    let body = &bytes[..at];
    if check_crc {
        let crc = u32::from_le_bytes([f[16], f[17], f[18], f[19]]);
        let actual = crc32fast::hash(body);
        if crc != actual {
            return Err(corrupt(
                at + 16,
                format!("crc32 mismatch: footer {crc:#010x}, body {actual:#010x}"),
            ));
        }
    }
    Ok(body)
}

/// Little-endian encoder for the small binary structures (manifest, WAL payloads).
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Length-prefixed (u32) bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }
    /// `0` for `None`, `1` then the bytes for `Some`.
    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.bytes(s.as_bytes());
            }
        }
    }
}

/// Bounds-checked little-endian decoder. `base` is the offset of `bytes` within `file`, so
/// errors report file offsets.
pub(crate) struct Decoder<'a, 'p> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
    file: &'p Path,
}

impl<'a, 'p> Decoder<'a, 'p> {
    pub fn new(bytes: &'a [u8], base: u64, file: &'p Path) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
            file,
        }
    }

    pub fn error(&self, what: impl Into<String>) -> CorruptionError {
        CorruptionError::new(self.file, self.base + self.pos as u64, what)
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CorruptionError> {
        if n > self.remaining() {
            return Err(self.error(format!(
                "{what}: needs {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, CorruptionError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, CorruptionError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, CorruptionError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A u32 that is used as a count or length, bounded by `max`.
    pub fn len(&mut self, max: usize, what: &str) -> Result<usize, CorruptionError> {
        let v = self.u32(what)? as usize;
        if v > max {
            return Err(self.error(format!("{what}: {v} exceeds the limit {max}")));
        }
        Ok(v)
    }

    pub fn bytes(&mut self, what: &str) -> Result<&'a [u8], CorruptionError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    pub fn string(&mut self, what: &str) -> Result<&'a str, CorruptionError> {
        let start = self.pos;
        let b = self.bytes(what)?;
        std::str::from_utf8(b).map_err(|_| {
            CorruptionError::new(
                self.file,
                self.base + start as u64,
                format!("{what}: not UTF-8"),
            )
        })
    }

    pub fn opt_string(&mut self, what: &str) -> Result<Option<&'a str>, CorruptionError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.string(what)?)),
            t => Err(self.error(format!("{what}: option tag {t}"))),
        }
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &str) -> Result<(), CorruptionError> {
        if self.remaining() != 0 {
            return Err(self.error(format!("{what}: {} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trip_and_every_damage_is_caught() {
        let body = b"hello world".to_vec();
        let mut file = body.clone();
        file.extend_from_slice(&footer(
            FileKind::Meta,
            body.len() as u64,
            crc32fast::hash(&body),
        ));
        let p = Path::new("x");
        assert_eq!(
            check_footer(&file, FileKind::Meta, p, true).unwrap(),
            &body[..]
        );
        assert!(check_footer(&file, FileKind::Vectors, p, true).is_err());
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x40;
            assert!(
                check_footer(&bad, FileKind::Meta, p, true).is_err(),
                "flip at {i}"
            );
        }
        for n in 0..file.len() {
            assert!(check_footer(&file[..n], FileKind::Meta, p, true).is_err());
        }
    }

    #[test]
    fn decoder_reports_offsets() {
        let p = Path::new("f");
        let mut d = Decoder::new(&[1, 0, 0, 0, 9], 100, p);
        assert_eq!(d.u32("a").unwrap(), 1);
        let e = d.u32("b").unwrap_err();
        assert_eq!(e.offset, 104);
    }
}
