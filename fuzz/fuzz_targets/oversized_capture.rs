//! Any bytes as an oversized message streaming past, split at any point: the capture
//! never panics, keeps the same head, tail, size, digest and id however the bytes are
//! split, its head is a prefix and its tail a suffix of the message, never overlapping,
//! and its texts are readable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_sink::oversized::Capture;

fuzz_target!(|data: &[u8]| {
    let Some((&[split, limit], data)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = 16 + usize::from(limit) * 8;
    let whole = {
        let mut c = Capture::new(max);
        c.push(data);
        c.finish()
    };
    let cut = usize::from(split) % (data.len() + 1);
    let parts = {
        let mut c = Capture::new(max);
        c.push(&data[..cut]);
        c.push(&data[cut..]);
        c.finish()
    };
    assert_eq!(whole, parts, "split at {cut}");
    assert_eq!(whole.size, data.len() as u64);
    assert!(data.starts_with(&whole.head));
    assert!(data.ends_with(&whole.tail));
    assert!(whole.head.len() + whole.tail.len() <= data.len());
    let _ = whole.texts();
});
