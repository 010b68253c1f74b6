//! Incremental decoding of `Transfer-Encoding: chunked` framing.
//!
//! The decoder sees each syscall's data as a visible prefix followed by bytes that were moved
//! but not captured. Chunk data is skipped by count, so it may be unseen; chunk-size lines and
//! the trailer section must be seen, except for one unambiguous case (see [`ChunkedDecoder::feed`]).

use crate::{Error, Result};

/// Longest chunk extension or trailer line accepted, so garbage cannot keep the decoder busy.
const MAX_LINE: usize = 4096;
/// The last chunk with no trailer fields: `0\r\n\r\n`.
const LAST_CHUNK_LEN: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line: hex digits so far, then extensions until the line feed.
    Size {
        size: u64,
        digits: u8,
        in_extension: bool,
        line_len: usize,
    },
    /// Skipping chunk data.
    Data { remaining: u64 },
    /// The CRLF after chunk data: bytes of it still expected.
    DataEnd { remaining: u8 },
    /// The trailer section after the last chunk; `line_len` is the current line's length.
    Trailer { line_len: usize },
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
            state: State::Size {
                size: 0,
                digits: 0,
                in_extension: false,
                line_len: 0,
            },
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
    /// except when exactly five unseen bytes remain at the start of a chunk-size line: no chunk
    /// but the last one (`0\r\n\r\n`) fits in five bytes, so that tail ends the body.
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
                State::Size { digits: 0, .. } if unseen == LAST_CHUNK_LEN => {
                    self.state = State::Done;
                    consumed += unseen;
                    unseen = 0;
                }
                State::Trailer { line_len: 0 } if unseen == 2 => {
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
            } => {
                if line_len >= MAX_LINE {
                    return Err(Error::HttpFraming("chunk-size line too long"));
                }
                let line_len = line_len + 1;
                match (byte, in_extension) {
                    (b'\n', _) if digits == 0 => {
                        return Err(Error::HttpFraming("chunk-size line without a size"));
                    }
                    (b'\n', _) if size == 0 => State::Trailer { line_len: 0 },
                    (b'\n', _) => State::Data { remaining: size },
                    (_, true) => State::Size {
                        size,
                        digits,
                        in_extension,
                        line_len,
                    },
                    (b';' | b' ' | b'\t' | b'\r', false) if digits > 0 => State::Size {
                        size,
                        digits,
                        in_extension: true,
                        line_len,
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
                        }
                    }
                }
            }
            State::DataEnd { remaining } => match (remaining, byte) {
                (2, b'\r') => State::DataEnd { remaining: 1 },
                (_, b'\n') => Self::size_start(),
                _ => return Err(Error::HttpFraming("chunk data not followed by CRLF")),
            },
            State::Trailer { line_len } => match byte {
                b'\n' if line_len == 0 => State::Done,
                b'\n' => State::Trailer { line_len: 0 },
                // A bare CR on an empty line is the end of the trailer section in progress.
                b'\r' if line_len == 0 => State::Trailer { line_len: 0 },
                _ if line_len >= MAX_LINE => {
                    return Err(Error::HttpFraming("trailer line too long"));
                }
                _ => State::Trailer {
                    line_len: line_len + 1,
                },
            },
            // Data is consumed in bulk by `feed`, and nothing is read after `Done`.
            state @ (State::Data { .. } | State::Done) => state,
        };
        Ok(())
    }
}
