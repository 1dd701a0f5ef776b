//! MinHash over character shingles, by one-permutation hashing with optimal
//! densification (Shrivastava, ICML 2017): every 8-byte shingle of the normal form is
//! hashed once, the top bits pick one of [`K`] bins and the bin keeps its smallest
//! value; bins left empty borrow a filled bin's value through a fixed hash sequence, so
//! two sketches agree in a bin with probability equal to the sets' Jaccard similarity.
//! One multiply-xorshift hash per shingle, no allocation per shingle.
//!
//! Long texts are sketched as chunks so that a short snippet is compared with a chunk of
//! similar size: containment of a 200-byte snippet in a 50 KB document is then a Jaccard
//! of about 0.5 with one chunk rather than 0.004 with the whole document. Indexed texts
//! are cut into disjoint chunks ([`index_chunks`]); a snippet that straddles two of them
//! is found through both, and the caller adds up what each shares. Queries are cut into
//! half-overlapping windows ([`query_chunks`]) so that a copied run sits whole in one.
//!
//! Each bin keeps the low 16 bits of its minimum (b-bit minwise hashing, Li and König
//! 2010): two unrelated bins agree by chance once in 65,536, which is noise next to the
//! 1/64 resolution of the estimate, and the sketch takes half the memory.

use crate::hash::mix;

/// Bins (hash values) per sketch.
pub const K: usize = 64;
/// Shingle width in bytes of the normal form.
pub const SHINGLE: usize = 8;
/// LSH bands of [`ROWS`] bins each, over all [`K`] bins. Two rows per band make a pair
/// with Jaccard 0.2 a candidate 73 % of the time, 0.3 95 % and 0.4 99.5 %: a snippet
/// that straddles two chunks shares only part of itself with each, and verification
/// is cheap next to a missed copy.
pub const BANDS: usize = 32;
/// Bins per LSH band.
pub const ROWS: usize = 2;
/// Bytes of normal form per chunk.
pub const CHUNK: usize = 320;
/// Distance between query window starts.
pub const STRIDE: usize = CHUNK / 2;

const EMPTY: u32 = u32::MAX;

/// The MinHash sketch of one chunk, with the number of shingles it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sketch {
    /// The low 16 bits of each bin's minimum.
    pub mins: [u16; K],
    /// Shingles hashed (repeats included).
    pub shingles: u32,
}

/// The 64-bit hashes of every shingle of `text` (a normal form), in order.
#[inline]
pub fn shingle_hashes(text: &[u8]) -> impl Iterator<Item = u64> + '_ {
    text.windows(SHINGLE).map(|w| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        mix(u64::from_le_bytes(b))
    })
}

/// A 64-bit hash of some byte strings (never 0), eight bytes at a time.
pub fn content_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64;
    for part in parts {
        let mut words = part.chunks_exact(8);
        for w in words.by_ref() {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = mix(h ^ u64::from_le_bytes(b));
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        h = mix(h ^ u64::from_le_bytes(tail) ^ ((part.len() as u64) << 56));
    }
    h.max(1)
}

/// Sketches `text` (a normal form) whole. `None` when it is shorter than one shingle.
pub fn sketch(text: &[u8]) -> Option<Sketch> {
    if text.len() < SHINGLE {
        return None;
    }
    let mut mins = [EMPTY; K];
    let mut n = 0u32;
    for h in shingle_hashes(text) {
        let bin = (h >> 58) as usize;
        let v = (h as u32) & (EMPTY - 1);
        if v < mins[bin] {
            mins[bin] = v;
        }
        n += 1;
    }
    densify(&mut mins);
    Some(Sketch {
        mins: mins.map(|m| m as u16),
        shingles: n,
    })
}

/// Fills empty bins from filled ones. Each empty bin probes bins in an order fixed by
/// its own index, the same in every sketch, and copies the first filled one it finds.
fn densify(mins: &mut [u32; K]) {
    if mins.iter().all(|&m| m != EMPTY) {
        return;
    }
    let filled = *mins;
    for (i, slot) in mins.iter_mut().enumerate() {
        if *slot != EMPTY {
            continue;
        }
        let mut attempt = 1u64;
        loop {
            let j = (mix(((i as u64) << 32) | attempt) % K as u64) as usize;
            if filled[j] != EMPTY {
                *slot = filled[j];
                break;
            }
            attempt += 1;
        }
    }
}

fn boundary(text: &[u8], mut i: usize) -> usize {
    while i < text.len() && (text[i] & 0xC0) == 0x80 {
        i += 1;
    }
    i
}

/// Byte ranges of the disjoint chunks an indexed text is cut into: [`CHUNK`] bytes each,
/// the last one taking a remainder shorter than half a chunk. Ranges start and end on
/// char boundaries of valid UTF-8.
pub fn index_chunks(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(text.len() / CHUNK + 1);
    let mut start = 0;
    while start < text.len() {
        let mut end = boundary(text, (start + CHUNK).min(text.len()));
        if text.len() - end < CHUNK / 2 {
            end = text.len();
        }
        out.push((start, end));
        start = end;
    }
    out
}

/// Byte ranges of the windows a query is cut into: one range for short texts,
/// windows of [`CHUNK`] bytes every [`STRIDE`] bytes otherwise, the last one ending at
/// the end, so that every run of up to `CHUNK - STRIDE` bytes lies whole in one.
pub fn query_chunks(text: &[u8]) -> Vec<(usize, usize)> {
    if text.len() <= CHUNK {
        return vec![(0, text.len())];
    }
    let boundary = |i: usize| boundary(text, i);
    let mut out = Vec::with_capacity(text.len() / STRIDE + 1);
    let mut start = 0;
    loop {
        let end = boundary((start + CHUNK).min(text.len()));
        out.push((start, end));
        if end >= text.len() {
            break;
        }
        start = boundary(start + STRIDE);
        if start + CHUNK >= text.len() {
            let last_start = boundary(text.len().saturating_sub(CHUNK));
            if last_start > out.last().map_or(0, |c| c.0) {
                out.push((last_start, text.len()));
            }
            break;
        }
    }
    out
}

/// The halves of a query window, each sketched to find candidates only. A copy that
/// straddles two indexed chunks shares about half of itself with each, a Jaccard near
/// 0.25 that misses every band of both about once in 50,000 copies; one half of the
/// copy then lies whole in one chunk, where its Jaccard is half again as high. `None`
/// for windows too short to halve into whole shingles.
pub fn halves(text: &[u8]) -> Option<[Sketch; 2]> {
    if text.len() < 4 * SHINGLE {
        return None;
    }
    let mid = boundary(text, text.len() / 2);
    Some([sketch(&text[..mid])?, sketch(&text[mid..])?])
}

/// The estimated Jaccard similarity of the two shingle sets.
pub fn jaccard(a: &Sketch, b: &Sketch) -> f64 {
    let same = a.mins.iter().zip(&b.mins).filter(|(x, y)| x == y).count();
    same as f64 / K as f64
}

/// How much two texts share, estimated from their sketches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overlap {
    /// Estimated Jaccard similarity.
    pub jaccard: f64,
    /// Estimated shingles in common.
    pub shared: f64,
    /// Share of the query's shingles found in the indexed text.
    pub query_in_indexed: f64,
    /// Share of the indexed text's shingles found in the query.
    pub indexed_in_query: f64,
}

/// Containment both ways from the Jaccard estimate and the two sizes:
/// |A∩B| = J/(1+J) · (|A|+|B|).
pub fn overlap(query: &Sketch, indexed: &Sketch) -> Overlap {
    let j = jaccard(query, indexed);
    let (q, d) = (
        f64::from(query.shingles.max(1)),
        f64::from(indexed.shingles.max(1)),
    );
    let shared = (j / (1.0 + j) * (q + d)).min(q).min(d);
    Overlap {
        jaccard: j,
        shared,
        query_in_indexed: shared / q,
        indexed_in_query: shared / d,
    }
}

/// The LSH band keys of a sketch: the band's index and its [`ROWS`] values, mixed
/// into 32 bits (a rare collision only adds a candidate that verification drops).
pub fn band_keys(s: &Sketch) -> [u32; BANDS] {
    let mut keys = [0u32; BANDS];
    for (b, key) in keys.iter_mut().enumerate() {
        let mut packed = (b as u64) << 48;
        for r in 0..ROWS {
            packed |= u64::from(s.mins[b * ROWS + r]) << (16 * r);
        }
        *key = (mix(packed) >> 32) as u32;
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::text::normalize;

    fn sk(s: &str) -> Sketch {
        sketch(normalize(s).as_bytes()).unwrap()
    }

    const DOC: &str = "Quarterly board minutes. Revenue for the third quarter was 4.2 million \
        euros, up eleven percent. The board approved the acquisition of Nordlicht GmbH for \
        18 million, closing in November, and asked legal to keep the deal confidential until \
        the regulator signs off. Headcount stays flat; the Lisbon office opens in spring.";

    #[test]
    fn identical_texts_agree_in_every_bin_and_unrelated_ones_in_few() {
        assert_eq!(jaccard(&sk(DOC), &sk(DOC)), 1.0);
        let other = "Weather for tomorrow: light rain in the morning, clearing by noon, highs \
            of fourteen degrees with a gentle breeze from the west. Pollen counts stay low and \
            the weekend looks dry and mild across the region, good for a walk in the hills.";
        assert!(jaccard(&sk(DOC), &sk(other)) < 0.1);
    }

    #[test]
    fn containment_of_a_snippet_is_high_while_its_jaccard_is_low() {
        let snippet = &DOC[60..200];
        let o = overlap(&sk(snippet), &sk(DOC));
        assert!(o.jaccard < 0.6, "{o:?}");
        assert!(o.query_in_indexed > 0.7, "{o:?}");
    }

    #[test]
    fn short_texts_are_densified_consistently() {
        let a = sk("acquisition of nordlicht");
        assert!(a.mins.iter().all(|&m| m != EMPTY as u16));
        assert_eq!(a, sk("Acquisition of   NORDLICHT"));
    }

    #[test]
    fn query_windows_overlap_and_index_chunks_tile_the_text() {
        let text = vec![b'a'; 1000];
        let q = query_chunks(&text);
        assert_eq!(q.first(), Some(&(0, CHUNK)));
        assert_eq!(q.last().map(|c| c.1), Some(1000));
        for w in q.windows(2) {
            assert!(w[1].0 < w[0].1, "consecutive windows overlap: {q:?}");
        }
        assert_eq!(query_chunks(b"short"), vec![(0, 5)]);
        let i = index_chunks(&text);
        assert_eq!(i, vec![(0, CHUNK), (CHUNK, 2 * CHUNK), (2 * CHUNK, 1000)]);
        assert_eq!(index_chunks(b"short"), vec![(0, 5)]);
        let multibyte = "é".repeat(400);
        for (s, e) in index_chunks(multibyte.as_bytes()) {
            assert!(multibyte.is_char_boundary(s) && multibyte.is_char_boundary(e));
        }
    }

    #[test]
    fn similar_sketches_share_a_band() {
        let a = band_keys(&sk(DOC));
        let edited = DOC.replace("eleven", "twelve").replace("spring", "summer");
        let b = band_keys(&sk(&edited));
        assert!(a.iter().zip(&b).any(|(x, y)| x == y));
    }
}
