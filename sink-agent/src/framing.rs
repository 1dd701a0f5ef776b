//! The stdio transport's framing: one JSON-RPC message per line (MCP stdio transport).
//!
//! The framer only splits; it never rewrites. A message is returned with its bytes as
//! received (a `\r` before the newline stays part of it), so what is forwarded is
//! byte-for-byte what came in. A line longer than the limit is returned in parts, so
//! the proxy can pass it through or refuse it without holding it in memory.

/// One piece of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole line, without its `\n`.
    Message(Vec<u8>),
    /// Part of a line longer than the limit, in order; `last` is set on the part that
    /// ends the line (its `\n` not included).
    Oversized {
        /// The bytes of this part.
        bytes: Vec<u8>,
        /// This part ends the line.
        last: bool,
    },
}

/// Splits a byte stream into lines of at most `max_bytes`.
#[derive(Debug)]
pub struct LineFramer {
    max_bytes: usize,
    buffer: Vec<u8>,
    /// Inside a line that already went past the limit.
    oversized: bool,
}

impl LineFramer {
    /// A framer for lines of at most `max_bytes` (at least 1).
    pub fn new(max_bytes: usize) -> Self {
        LineFramer {
            max_bytes: max_bytes.max(1),
            buffer: Vec::new(),
            oversized: false,
        }
    }

    /// Feeds bytes read from the stream; complete frames are appended to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Frame>) {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let (line, rest) = (&bytes[..end], &bytes[end + 1..]);
                    if self.oversized || self.buffer.len() + line.len() > self.max_bytes {
                        self.buffer.extend_from_slice(line);
                        out.push(Frame::Oversized {
                            bytes: std::mem::take(&mut self.buffer),
                            last: true,
                        });
                        self.oversized = false;
                    } else {
                        self.buffer.extend_from_slice(line);
                        out.push(Frame::Message(std::mem::take(&mut self.buffer)));
                    }
                    bytes = rest;
                }
                None => {
                    self.buffer.extend_from_slice(bytes);
                    if self.buffer.len() > self.max_bytes {
                        self.oversized = true;
                        out.push(Frame::Oversized {
                            bytes: std::mem::take(&mut self.buffer),
                            last: false,
                        });
                    }
                    bytes = &[];
                }
            }
        }
    }

    /// The stream ended: whatever is buffered is a last line without its newline.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if self.oversized {
            self.oversized = false;
            out.push(Frame::Oversized {
                bytes: std::mem::take(&mut self.buffer),
                last: true,
            });
        } else if !self.buffer.is_empty() {
            out.push(Frame::Message(std::mem::take(&mut self.buffer)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        out
    }

    #[test]
    fn lines_split_across_reads_come_out_whole_and_unchanged() {
        let out = frames(64, &[b"{\"a\":", b"1}\r\n{\"b\"", b":2}\n", b"{\"c\":3}"]);
        assert_eq!(
            out,
            vec![
                Frame::Message(b"{\"a\":1}\r".to_vec()),
                Frame::Message(b"{\"b\":2}".to_vec()),
                Frame::Message(b"{\"c\":3}".to_vec()),
            ]
        );
    }

    #[test]
    fn a_long_line_comes_out_in_parts_and_the_next_one_is_whole() {
        let out = frames(4, &[b"0123", b"456", b"78\nab\n"]);
        let mut joined = Vec::new();
        let mut parts = 0;
        for f in &out[..out.len() - 1] {
            let Frame::Oversized { bytes, .. } = f else {
                panic!("expected parts, got {f:?}")
            };
            joined.extend_from_slice(bytes);
            parts += 1;
        }
        assert!(parts >= 2);
        assert_eq!(joined, b"012345678");
        assert!(matches!(
            out[out.len() - 2],
            Frame::Oversized { last: true, .. }
        ));
        assert_eq!(out[out.len() - 1], Frame::Message(b"ab".to_vec()));
    }

    #[test]
    fn invalid_utf8_passes_through_untouched() {
        let out = frames(64, &[b"\xff\xfe{}\n"]);
        assert_eq!(out, vec![Frame::Message(b"\xff\xfe{}".to_vec())]);
    }
}
