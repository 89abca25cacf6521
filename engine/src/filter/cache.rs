//! Match bitmaps of segments, kept per predicate: a segment's rows and their metadata never
//! change (an update tombstones the row and writes it anew elsewhere; deletes are applied
//! from the skip bitmap), so a predicate's bitmap over a segment is computed once per handle.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Bitmap bytes kept at most; past it the cache starts over (an old predicate or a segment
/// compacted away holds memory only until then).
const MAX_BYTES: usize = 64 << 20;

/// `(segment id, predicate as printed)` → the segment's match bitmap words.
#[derive(Default)]
pub(crate) struct MatchCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    bitmaps: HashMap<(u64, String), Arc<Vec<u64>>>,
    bytes: usize,
}

impl MatchCache {
    pub fn get(&self, segment: u64, predicate: &str) -> Option<Arc<Vec<u64>>> {
        self.inner
            .lock()
            .bitmaps
            .get(&(segment, predicate.to_owned()))
            .cloned()
    }

    pub fn insert(&self, segment: u64, predicate: String, bitmap: Arc<Vec<u64>>) {
        let bytes = bitmap.len() * 8;
        if bytes > MAX_BYTES {
            return;
        }
        let mut entries = self.inner.lock();
        if entries.bytes + bytes > MAX_BYTES {
            entries.bitmaps.clear();
            entries.bytes = 0;
        }
        if entries
            .bitmaps
            .insert((segment, predicate), bitmap)
            .is_none()
        {
            entries.bytes += bytes;
        }
    }
}
