//! Incremental decoding of `Transfer-Encoding: chunked` framing.
//!
//! The decoder sees each syscall's data as a visible prefix followed by bytes that were moved
//! but not captured. Chunk data is skipped by count, so it may be unseen; chunk-size lines and
//! the trailer section must be seen, except for one unambiguous case (see [`ChunkedDecoder::feed`]).

use crate::{Error, Result};

/// Longest chunk extension or trailer line accepted, so garbage cannot keep the decoder busy.
const MAX_LINE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line: hex digits so far, then extensions until the line feed.
    Size {
        size: u64,
        digits: u8,
        in_extension: bool,
        line_len: usize,
        /// The last byte was a carriage return.
        cr: bool,
    },
    /// Skipping chunk data.
    Data {
        remaining: u64,
    },
    /// The CRLF after chunk data: bytes of it still expected.
    DataEnd {
        remaining: u8,
    },
    /// The trailer section after the last chunk; `line_len` is the current line's length and
    /// `cr` whether an empty line so far holds a carriage return.
    Trailer {
        line_len: usize,
        cr: bool,
    },
    Done,
}

/// What a call to [`ChunkedDecoder::feed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that belong to the body (framing included); the rest, if any, is the
    /// next message.
    pub consumed: u64,
    pub status: ChunkedStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkedStatus {
    /// The body continues in later input.
    NeedMore,
    /// The last chunk and trailer section ended.
    Done,
    /// Framing fell into the unseen part of the input: where the body ends is unknown.
    Lost,
}

/// Decodes chunked framing across any number of input pieces, counting the data bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
    data_bytes: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: Self::size_start(),
            data_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Decoded data bytes so far (the body size without chunk framing).
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Feeds `visible` bytes followed by `unseen` bytes whose content is unknown.
    ///
    /// When framing would have to be read from unseen bytes the body is [`ChunkedStatus::Lost`],
    /// except when the unseen bytes are exactly what is left of a last chunk without trailer
    /// fields (`0\r\n\r\n`): every other chunk is at least six bytes long, so such a tail can
    /// only be the end of the body.
    pub fn feed(&mut self, visible: &[u8], unseen: u64) -> Result<Progress> {
        let mut pos = 0usize;
        while pos < visible.len() {
            match self.state {
                State::Done => break,
                State::Data { remaining } => {
                    let take = remaining.min((visible.len() - pos) as u64);
                    pos += take as usize;
                    self.data(remaining, take);
                }
                _ => {
                    self.step(visible[pos])?;
                    pos += 1;
                }
            }
        }
        let mut consumed = pos as u64;
        let mut unseen = unseen;
        if pos < visible.len() {
            // Done with visible bytes left over: they belong to the next message.
            unseen = 0;
        }
        while unseen > 0 {
            match self.state {
                State::Done => break,
                State::Data { remaining } => {
                    let take = remaining.min(unseen);
                    self.data(remaining, take);
                    consumed += take;
                    unseen -= take;
                }
                State::DataEnd { remaining } => {
                    let take = u64::from(remaining).min(unseen);
                    self.state = if take == u64::from(remaining) {
                        Self::size_start()
                    } else {
                        State::DataEnd {
                            remaining: remaining - take as u8,
                        }
                    };
                    consumed += take;
                    unseen -= take;
                }
                _ if self.last_chunk_tail() == Some(unseen) => {
                    self.state = State::Done;
                    consumed += unseen;
                    unseen = 0;
                }
                _ => {
                    return Ok(Progress {
                        consumed: consumed + unseen,
                        status: ChunkedStatus::Lost,
                    });
                }
            }
        }
        let status = if self.state == State::Done {
            ChunkedStatus::Done
        } else {
            ChunkedStatus::NeedMore
        };
        Ok(Progress { consumed, status })
    }

    fn size_start() -> State {
        State::Size {
            size: 0,
            digits: 0,
            in_extension: false,
            line_len: 0,
            cr: false,
        }
    }

    /// Bytes left if the body ends with a plain last chunk from the current position.
    fn last_chunk_tail(&self) -> Option<u64> {
        match self.state {
            State::Size { digits: 0, .. } => Some(5),
            State::Size {
                size: 0, cr: true, ..
            } => Some(3),
            State::Size {
                size: 0,
                in_extension: false,
                ..
            } => Some(4),
            State::Trailer { line_len: 0, cr } => Some(if cr { 1 } else { 2 }),
            _ => None,
        }
    }

    fn data(&mut self, remaining: u64, take: u64) {
        self.data_bytes = self.data_bytes.saturating_add(take);
        self.state = if take == remaining {
            State::DataEnd { remaining: 2 }
        } else {
            State::Data {
                remaining: remaining - take,
            }
        };
    }

    /// One visible framing byte (anything but chunk data).
    fn step(&mut self, byte: u8) -> Result<()> {
        self.state = match self.state {
            State::Size {
                size,
                digits,
                in_extension,
                line_len,
                ..
            } => {
                if line_len >= MAX_LINE {
                    return Err(Error::HttpFraming("chunk-size line too long"));
                }
                let line_len = line_len + 1;
                match (byte, in_extension) {
                    (b'\n', _) if digits == 0 => {
                        return Err(Error::HttpFraming("chunk-size line without a size"));
                    }
                    (b'\n', _) if size == 0 => State::Trailer {
                        line_len: 0,
                        cr: false,
                    },
                    (b'\n', _) => State::Data { remaining: size },
                    (_, true) => State::Size {
                        size,
                        digits,
                        in_extension,
                        line_len,
                        cr: byte == b'\r',
                    },
                    (b';' | b' ' | b'\t' | b'\r', false) if digits > 0 => State::Size {
                        size,
                        digits,
                        in_extension: true,
                        line_len,
                        cr: byte == b'\r',
                    },
                    (_, false) => {
                        let value = match byte {
                            b'0'..=b'9' => byte - b'0',
                            b'a'..=b'f' => byte - b'a' + 10,
                            b'A'..=b'F' => byte - b'A' + 10,
                            _ => return Err(Error::HttpFraming("invalid chunk size")),
                        };
                        if digits >= 16 {
                            return Err(Error::HttpFraming("chunk size too large"));
                        }
                        State::Size {
                            size: (size << 4) | u64::from(value),
                            digits: digits + 1,
                            in_extension,
                            line_len,
                            cr: false,
                        }
                    }
                }
            }
            State::DataEnd { remaining } => match (remaining, byte) {
                (2, b'\r') => State::DataEnd { remaining: 1 },
                (_, b'\n') => Self::size_start(),
                _ => return Err(Error::HttpFraming("chunk data not followed by CRLF")),
            },
            State::Trailer { line_len, cr } => match byte {
                b'\n' if line_len == 0 => State::Done,
                b'\n' => State::Trailer {
                    line_len: 0,
                    cr: false,
                },
                // A CR on an empty line starts the end of the trailer section.
                b'\r' if line_len == 0 && !cr => State::Trailer {
                    line_len: 0,
                    cr: true,
                },
                _ if line_len >= MAX_LINE => {
                    return Err(Error::HttpFraming("trailer line too long"));
                }
                _ => State::Trailer {
                    line_len: line_len + 1,
                    cr: false,
                },
            },
            // Data is consumed in bulk by `feed`, and nothing is read after `Done`.
            state @ (State::Data { .. } | State::Done) => state,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden_body(name: &str, head_len: usize) -> Vec<u8> {
        let path = format!("{}/testdata/http1/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap()[head_len..].to_vec()
    }

    /// Golden chunked bodies: file, where the body starts, decoded data bytes.
    const GOLDEN: &[(&str, usize, u64)] = &[
        ("nginx_gzip_chunked.resp", 251, 3183),
        ("custom_chunked_request.resp", 151, 1500),
        ("custom_chunked_request.req", 161, 1500),
    ];

    #[test]
    fn golden_bodies_decode_whole_and_byte_by_byte() {
        for &(file, head_len, data) in GOLDEN {
            let body = golden_body(file, head_len);
            let mut whole = ChunkedDecoder::default();
            let progress = whole.feed(&body, 0).unwrap();
            assert_eq!(progress.status, ChunkedStatus::Done, "{file}");
            assert_eq!(progress.consumed, body.len() as u64, "{file}");
            assert_eq!(whole.data_bytes(), data, "{file}");

            let mut bytewise = ChunkedDecoder::default();
            let mut consumed = 0;
            for (i, byte) in body.iter().enumerate() {
                let progress = bytewise.feed(std::slice::from_ref(byte), 0).unwrap();
                consumed += progress.consumed;
                let last = i + 1 == body.len();
                let expected = if last {
                    ChunkedStatus::Done
                } else {
                    ChunkedStatus::NeedMore
                };
                assert_eq!(progress.status, expected, "{file} byte {i}");
            }
            assert_eq!(consumed, body.len() as u64, "{file}");
            assert_eq!(bytewise.data_bytes(), data, "{file}");
        }
    }

    /// Any split of a golden body into two inputs decodes the same.
    #[test]
    fn golden_bodies_decode_across_any_split() {
        for &(file, head_len, data) in GOLDEN {
            let body = golden_body(file, head_len);
            for split in 0..=body.len() {
                let mut decoder = ChunkedDecoder::default();
                let first = decoder.feed(&body[..split], 0).unwrap();
                let second = decoder.feed(&body[split..], 0).unwrap();
                assert_eq!(first.consumed + second.consumed, body.len() as u64);
                assert_eq!(second.status, ChunkedStatus::Done, "{file} at {split}");
                assert_eq!(decoder.data_bytes(), data, "{file} at {split}");
            }
        }
    }

    #[test]
    fn unseen_chunk_data_is_skipped_by_count() {
        // One 1500-byte chunk written at once, only the first 1024 bytes captured.
        let body = golden_body("custom_chunked_request.req", 161);
        let mut decoder = ChunkedDecoder::default();
        let progress = decoder
            .feed(&body[..1024], (body.len() - 1024) as u64)
            .unwrap();
        assert_eq!(progress.status, ChunkedStatus::Done);
        assert_eq!(progress.consumed, body.len() as u64);
        assert_eq!(decoder.data_bytes(), 1500);
    }

    #[test]
    fn framing_in_unseen_bytes() {
        // Chunk data and its CRLF unseen, then exactly the last chunk: done.
        let mut decoder = ChunkedDecoder::default();
        let progress = decoder.feed(b"5\r\nhe", 3 + 2 + 5).unwrap();
        assert_eq!(progress.status, ChunkedStatus::Done);
        assert_eq!(progress.consumed, 15);
        assert_eq!(decoder.data_bytes(), 5);

        // Anything else after the data is another chunk whose size cannot be read.
        let mut decoder = ChunkedDecoder::default();
        let progress = decoder.feed(b"5\r\nhe", 3 + 2 + 9).unwrap();
        assert_eq!(progress.status, ChunkedStatus::Lost);

        // Data then a CRLF split across calls, and the trailer's final CRLF unseen.
        let mut decoder = ChunkedDecoder::default();
        assert_eq!(
            decoder.feed(b"3\r\nabc\r", 0).unwrap().status,
            ChunkedStatus::NeedMore
        );
        let progress = decoder.feed(b"\n0\r\n", 2).unwrap();
        assert_eq!(progress.status, ChunkedStatus::Done);
        assert_eq!(progress.consumed, 6);

        // A size line cut off by the capture.
        let mut decoder = ChunkedDecoder::default();
        assert_eq!(decoder.feed(b"1", 40).unwrap().status, ChunkedStatus::Lost);
    }

    #[test]
    fn extensions_trailers_and_the_next_message() {
        let mut decoder = ChunkedDecoder::default();
        let input =
            b"4;name=value\r\nWiki\r\n5 \r\npedia\r\n0\r\nExpires: never\r\n\r\nGET / HTTP/1.1";
        let progress = decoder.feed(input, 0).unwrap();
        assert_eq!(progress.status, ChunkedStatus::Done);
        assert_eq!(progress.consumed, input.len() as u64 - 14);
        assert_eq!(decoder.data_bytes(), 9);
        // Bare line feeds are tolerated.
        let mut decoder = ChunkedDecoder::default();
        let progress = decoder.feed(b"2\nok\n0\n\n", 7).unwrap();
        assert_eq!(progress.status, ChunkedStatus::Done);
        assert_eq!(progress.consumed, 8);
    }

    #[test]
    fn invalid_framing_is_an_error() {
        for input in [
            &b"zz\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"5\r\nhelloXX",
            b"11111111111111111\r\n",
        ] {
            let mut decoder = ChunkedDecoder::default();
            assert!(
                decoder.feed(input, 0).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut decoder = ChunkedDecoder::default();
        let long_extension = [b"1;".as_slice(), &[b'x'; MAX_LINE]].concat();
        assert!(decoder.feed(&long_extension, 0).is_err());
    }
}
