//! Length-prefixed messages over one direction of a connection, as captured: a fixed-size head
//! that gives the body's length, then the body. Shared by the PostgreSQL and MySQL parsers.
//!
//! A message's length is known from its head, so a body whose bytes were not captured is skipped
//! by count, and the reader stays in place. Unseen bytes inside a head lose the place: the reader
//! then discards everything until its parser, at a chunk boundary where a head plausibly starts,
//! calls [`Reader::resync`]. Bodies are borrowed from the chunk when they are wholly in it;
//! otherwise their visible prefix is buffered, up to a cap.

use crate::connection::stream::Chunk;

/// The longest head a layout may have.
const MAX_HEAD: usize = 5;

/// How a protocol's heads look.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// Bytes of the head.
    pub head_len: usize,
    /// From a whole head, its tag (a message type or a sequence id) and the body's length;
    /// `None` when the bytes cannot be a head.
    pub decode: fn(&[u8]) -> Option<(u8, u64)>,
}

/// What is left of a chunk to read.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    pub visible: &'a [u8],
    pub unseen: u64,
    pub timestamp_ns: u64,
    pub tid: Option<u32>,
}

impl<'a> Input<'a> {
    pub fn new(chunk: &Chunk<'a>) -> Self {
        Self {
            visible: chunk.visible,
            unseen: chunk.unseen,
            timestamp_ns: chunk.timestamp_ns,
            tid: chunk.tid,
        }
    }

    /// Takes up to `n` visible bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.visible.split_at(n.min(self.visible.len()));
        self.visible = rest;
        taken
    }

    pub fn is_empty(&self) -> bool {
        self.visible.is_empty() && self.unseen == 0
    }

    /// Drops the rest.
    pub fn clear(&mut self) {
        self.visible = &[];
        self.unseen = 0;
    }
}

/// A message read whole, or with its unseen parts skipped.
#[derive(Debug)]
pub(crate) struct Message<'a> {
    pub tag: u8,
    /// The body's visible prefix (all of it when `whole`), at most the reader's cap when the
    /// message spanned chunks.
    pub body: &'a [u8],
    /// The body's length per its head.
    pub len: u64,
    /// Every body byte was seen and kept.
    pub whole: bool,
    /// When and on which thread its first byte moved.
    pub start_ns: u64,
    pub tid: Option<u32>,
}

/// What the reader found next.
#[derive(Debug)]
pub(crate) enum Next<'a> {
    Message(Message<'a>),
    /// The input is used up inside a message, or at its end.
    NeedMore,
    /// The place in the stream is lost; the input was discarded.
    Lost,
}

/// The message being read.
#[derive(Clone, Copy, Debug)]
struct Current {
    tag: u8,
    len: u64,
    /// Body bytes still to come.
    left: u64,
    /// Some body bytes were not seen, or not kept.
    gap: bool,
    start_ns: u64,
    tid: Option<u32>,
}

/// One direction's message reader.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    head: [u8; MAX_HEAD],
    head_have: usize,
    head_start: Option<(u64, Option<u32>)>,
    current: Option<Current>,
    /// The visible prefix of a body that spans chunks.
    body: Vec<u8>,
    lost: bool,
}

impl Reader {
    /// A reader that starts with its place lost (a connection joined mid-stream).
    pub fn lost() -> Self {
        Self {
            lost: true,
            ..Self::default()
        }
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Gives up the place: what comes is discarded until [`Reader::resync`].
    pub fn lose(&mut self) {
        *self = Self {
            body: std::mem::take(&mut self.body),
            lost: true,
            ..Self::default()
        };
        self.body.clear();
    }

    /// The next input starts a message.
    pub fn resync(&mut self) {
        self.lose();
        self.lost = false;
    }

    pub fn buffered(&self) -> usize {
        self.body.capacity()
    }

    /// The next message of `input`, per `layout`; a body spanning chunks keeps at most `cap`
    /// visible bytes.
    pub fn next<'a: 'b, 'b>(
        &'b mut self,
        input: &mut Input<'a>,
        layout: Layout,
        cap: usize,
    ) -> Next<'b> {
        if self.lost {
            input.clear();
            return Next::Lost;
        }
        let mut current = match self.current {
            Some(current) => current,
            None => match self.read_head(input, layout) {
                Some(current) => current,
                None if self.lost => {
                    input.clear();
                    return Next::Lost;
                }
                None => return Next::NeedMore,
            },
        };
        let fresh = self.current.is_none();
        let visible = input.take(usize::try_from(current.left).unwrap_or(usize::MAX));
        current.left -= visible.len() as u64;
        if fresh && current.left == 0 {
            // The whole body is in this chunk: borrowed, not copied.
            self.body.clear();
            return Next::Message(Message {
                tag: current.tag,
                body: visible,
                len: current.len,
                whole: true,
                start_ns: current.start_ns,
                tid: current.tid,
            });
        }
        if fresh {
            self.body.clear();
        }
        // Keep a contiguous prefix only: after a gap or past the cap, bytes are counted, not kept.
        if !current.gap {
            let room = cap.saturating_sub(self.body.len());
            self.body
                .extend_from_slice(&visible[..visible.len().min(room)]);
            current.gap = visible.len() > room;
        }
        if current.left > 0 && input.visible.is_empty() && input.unseen > 0 {
            let skip = current.left.min(input.unseen);
            current.left -= skip;
            input.unseen -= skip;
            current.gap = true;
        }
        if current.left > 0 {
            self.current = Some(current);
            return Next::NeedMore;
        }
        self.current = None;
        Next::Message(Message {
            tag: current.tag,
            body: &self.body,
            len: current.len,
            whole: !current.gap,
            start_ns: current.start_ns,
            tid: current.tid,
        })
    }

    /// Reads (the rest of) a head; `None` when the input ends first or the place is lost.
    fn read_head(&mut self, input: &mut Input<'_>, layout: Layout) -> Option<Current> {
        let head_len = layout.head_len.min(MAX_HEAD);
        if self.head_have == 0 {
            if input.visible.is_empty() {
                if input.unseen > 0 {
                    // A message starts in bytes nobody saw.
                    self.lose();
                }
                return None;
            }
            self.head_start = Some((input.timestamp_ns, input.tid));
        }
        let part = input.take(head_len - self.head_have);
        self.head[self.head_have..self.head_have + part.len()].copy_from_slice(part);
        self.head_have += part.len();
        if self.head_have < head_len {
            if input.unseen > 0 {
                self.lose();
            }
            return None;
        }
        self.head_have = 0;
        let Some((tag, len)) = (layout.decode)(&self.head[..head_len]) else {
            self.lose();
            return None;
        };
        let (start_ns, tid) = self.head_start.unwrap_or((input.timestamp_ns, input.tid));
        Some(Current {
            tag,
            len,
            left: len,
            gap: false,
            start_ns,
            tid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-byte tag and a big-endian 32-bit length that counts itself (PostgreSQL's layout).
    const LAYOUT: Layout = Layout {
        head_len: 5,
        decode: |head| {
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
            (len >= 4).then(|| (head[0], u64::from(len - 4)))
        },
    };

    fn input(visible: &[u8], unseen: u64, ts: u64) -> Input<'_> {
        Input {
            visible,
            unseen,
            timestamp_ns: ts,
            tid: Some(1),
        }
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// (tag, body, whole, start) of a message read.
    type Read = (u8, Vec<u8>, bool, u64);

    /// Every message read from the chunks, and whether the place was lost.
    fn read_all(chunks: &[(&[u8], u64)]) -> (Vec<Read>, bool) {
        let mut reader = Reader::default();
        let mut out = Vec::new();
        for (i, (visible, unseen)) in chunks.iter().enumerate() {
            let mut input = input(visible, *unseen, i as u64);
            while !input.is_empty() {
                match reader.next(&mut input, LAYOUT, 8) {
                    Next::Message(m) => out.push((m.tag, m.body.to_vec(), m.whole, m.start_ns)),
                    Next::NeedMore | Next::Lost => break,
                }
            }
        }
        (out, reader.is_lost())
    }

    #[test]
    fn messages_whole_split_and_skipped() {
        let mut bytes = message(b'Q', b"SELECT 1\0");
        bytes.extend(message(b'X', b""));
        let (all, lost) = read_all(&[(&bytes, 0)]);
        assert!(!lost);
        assert_eq!(
            all,
            vec![
                (b'Q', b"SELECT 1\0".to_vec(), true, 0),
                (b'X', vec![], true, 0)
            ]
        );
        // Split inside the head and inside the body: one message, started at the first chunk,
        // its body buffered up to the cap.
        let (all, _) = read_all(&[(&bytes[..3], 0), (&bytes[3..9], 0), (&bytes[9..], 0)]);
        assert_eq!(all[0], (b'Q', b"SELECT 1".to_vec(), false, 0));
        assert_eq!(all[1], (b'X', vec![], true, 2));
        // The body's end unseen: skipped by count, the next message read in place.
        let (all, lost) = read_all(&[(&bytes[..8], 6), (&bytes[14..], 0)]);
        assert!(!lost);
        assert_eq!(
            all,
            vec![(b'Q', b"SEL".to_vec(), false, 0), (b'X', vec![], true, 1)]
        );
        // A head cut by unseen bytes loses the place.
        let (all, lost) = read_all(&[(&bytes[..3], 11), (&bytes[14..], 0)]);
        assert!(all.is_empty());
        assert!(lost);
        // A head that cannot be one loses it too.
        let (_, lost) = read_all(&[(b"Q\0\0\0\x01", 0)]);
        assert!(lost);
    }
}
