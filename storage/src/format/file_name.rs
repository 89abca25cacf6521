//! [`FileName`]: the name of every file hivlp keeps in a database directory, built and parsed
//! in one place, so that clean-up code only ever removes files that are exactly ours.

use std::fmt;

use crate::schema::{Modality, Tier};

/// A file of a database directory (see `FORMAT.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileName {
    /// `CURRENT`: names the live manifest.
    Current,
    /// `CURRENT.tmp`: the next `CURRENT`, before its rename.
    CurrentTmp,
    /// `LOCK`: the writer's advisory lock.
    Lock,
    /// `MANIFEST-<n>`.
    Manifest(u64),
    /// `wal-<n>.log`.
    Wal(u64),
    /// `seg-<id>.meta`.
    SegmentMeta(u64),
    /// `seg-<id>.<image|text>.<coarse|fine>`.
    SegmentVectors {
        id: u64,
        modality: Modality,
        tier: Tier,
    },
    /// `seg-<id>.del-<generation>`.
    Tombstones { id: u64, generation: u64 },
    /// `seg-<id>.fields`: the names of the segment's field columns.
    FieldDirectory(u64),
    /// `seg-<id>.field-<column>`: column `column` of the segment's field directory.
    FieldColumn { id: u64, column: u64 },
    /// `seg-<id>.<image|text>.parts`: the partitions of the modality's coarse vectors.
    SegmentPartitions { id: u64, modality: Modality },
}

impl FileName {
    /// Parses a directory entry's name; `None` for anything hivlp does not write.
    pub fn parse(name: &str) -> Option<FileName> {
        match name {
            "CURRENT" => return Some(FileName::Current),
            "CURRENT.tmp" => return Some(FileName::CurrentTmp),
            "LOCK" => return Some(FileName::Lock),
            _ => {}
        }
        if let Some(n) = name.strip_prefix("MANIFEST-") {
            return number(n).map(FileName::Manifest);
        }
        if let Some(n) = name
            .strip_prefix("wal-")
            .and_then(|r| r.strip_suffix(".log"))
        {
            return number(n).map(FileName::Wal);
        }
        let (id, kind) = name.strip_prefix("seg-")?.split_once('.')?;
        let id = number(id)?;
        if kind == "meta" {
            return Some(FileName::SegmentMeta(id));
        }
        if kind == "fields" {
            return Some(FileName::FieldDirectory(id));
        }
        if let Some(column) = kind.strip_prefix("field-") {
            return number(column).map(|column| FileName::FieldColumn { id, column });
        }
        if let Some(generation) = kind.strip_prefix("del-") {
            return number(generation).map(|generation| FileName::Tombstones { id, generation });
        }
        let (modality, tier) = kind.split_once('.')?;
        let modality = Modality::ALL.into_iter().find(|m| m.name() == modality)?;
        if tier == "parts" {
            return Some(FileName::SegmentPartitions { id, modality });
        }
        let tier = Tier::ALL.into_iter().find(|t| t.name() == tier)?;
        Some(FileName::SegmentVectors { id, modality, tier })
    }
}

/// Decimal digits only (no sign, no spaces), as the writer formats them.
fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FileName::Current => f.write_str("CURRENT"),
            FileName::CurrentTmp => f.write_str("CURRENT.tmp"),
            FileName::Lock => f.write_str("LOCK"),
            FileName::Manifest(n) => write!(f, "MANIFEST-{n:06}"),
            FileName::Wal(n) => write!(f, "wal-{n:06}.log"),
            FileName::SegmentMeta(id) => write!(f, "seg-{id:06}.meta"),
            FileName::SegmentVectors { id, modality, tier } => {
                write!(f, "seg-{id:06}.{}.{tier}", modality.name())
            }
            FileName::Tombstones { id, generation } => {
                write!(f, "seg-{id:06}.del-{generation:06}")
            }
            FileName::FieldDirectory(id) => write!(f, "seg-{id:06}.fields"),
            FileName::FieldColumn { id, column } => write!(f, "seg-{id:06}.field-{column:06}"),
            FileName::SegmentPartitions { id, modality } => {
                write!(f, "seg-{id:06}.{}.parts", modality.name())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_strangers_do_not() {
        let names = [
            FileName::Current,
            FileName::CurrentTmp,
            FileName::Lock,
            FileName::Manifest(3),
            FileName::Wal(1_234_567),
            FileName::SegmentMeta(9),
            FileName::SegmentVectors {
                id: 2,
                modality: Modality::Text,
                tier: Tier::Fine,
            },
            FileName::SegmentVectors {
                id: 2,
                modality: Modality::Image,
                tier: Tier::Coarse,
            },
            FileName::Tombstones {
                id: 4,
                generation: 12,
            },
            FileName::FieldDirectory(5),
            FileName::FieldColumn { id: 5, column: 0 },
            FileName::SegmentPartitions {
                id: 6,
                modality: Modality::Text,
            },
            FileName::FieldColumn {
                id: 5,
                column: 1_000_000,
            },
        ];
        for name in names {
            assert_eq!(FileName::parse(&name.to_string()), Some(name), "{name}");
        }
        for stranger in [
            "seg-1",
            "seg-01.jpg",
            "seg-+1.meta",
            "seg-1.image.fine.bak",
            "seg-1.del-",
            "seg-1.field-",
            "seg-1.field-x",
            "seg-1.fields~",
            "wal-.log",
            "wal-1.log~",
            "MANIFEST-",
            "MANIFEST-1 ",
            "notes.txt",
            "current",
        ] {
            assert_eq!(FileName::parse(stranger), None, "{stranger}");
        }
    }
}
