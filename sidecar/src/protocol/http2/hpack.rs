//! HPACK (RFC 7541) header block decoding for an observer: a decoder that may have joined the
//! connection late, or lost header blocks to gaps in the capture, and must never panic, never
//! guess, and never let a peer make it hold more than a bounded table.
//!
//! # Why not a crate
//!
//! Checked in December 2026: `h2` 0.4.20 (the HTTP/2 stack under hyper and tonic) has an HPACK
//! decoder, but its `hpack` module is private even with the `unstable` feature, which exposes only
//! `frame` and `proto`. `hpack` 0.3.0 is unmaintained (RUSTSEC-2023-0084) and panics on input as
//! short as `[0x3f]` (RUSTSEC-2023-0085). `httlib-hpack` 0.1.3 panics (an index out of bounds in
//! `decode_string`) on the first request of RFC 7541 C.3.1 cut after four bytes. `loona-hpack`
//! 0.4.3 does not panic on any cut of that block, but fails a whole block at the first dynamic
//! index it does not hold (`[0xbe, 0x82]` on a fresh decoder gives `HeaderIndexOutOfBounds` and
//! no field), and decodes Huffman strings a bit at a time through hash maps it rebuilds for each
//! string. None of them can decode a block that refers to entries inserted before it started,
//! which is every block of a connection the sidecar joins late.
//!
//! # The dynamic table as an observer knows it
//!
//! The peer's table holds the newest entries it inserted, newest at index 62, as many as fit its
//! size. This decoder holds the entries inserted since it started (or last lost track), newest
//! first, followed by an unknown tail. Both lists are the same insertion history cut at different
//! depths, so wherever both have an entry at an index, it is the same entry: the known entries are
//! a prefix of the real table. A reference within the known entries therefore resolves exactly; a
//! reference past them is to an entry this decoder never saw, and the field is reported with its
//! name and value unknown (`None`), never guessed.
//!
//! The decoder cannot know the table size for sure: it may have missed a size update, or the
//! SETTINGS that allowed one. Getting it wrong only moves where the known prefix is cut. Keeping
//! entries the peer already evicted (size over-estimated) is harmless: the peer never refers to
//! an index it does not hold, so those entries are never looked up. Evicting entries the peer
//! still holds (size under-estimated) only turns later references to them into unknown fields.
//! Either way no resolved field is wrong; the tests check both directions.
//!
//! A literal with incremental indexing whose name refers to an unknown entry still inserts an
//! entry, with a known value and an unknown name, so that the indices of everything after it stay
//! right. Its size is counted as if the name were empty, which can only keep it longer than the
//! peer does (harmless, as above).
//!
//! A header block that is cut off (a truncated HEADERS frame, a gap) decodes up to the last
//! complete field; then the decoder forgets every entry, because the lost rest of the block may
//! have inserted entries, which would shift every index after them. An invalid block does the
//! same. The caller also calls [`Decoder::desync`] when a whole block may have been lost.
//!
//! Memory: the entries' bytes are at most the table size (capped at [`MAX_TABLE_SIZE`] whatever
//! the peer signals), kept in one buffer that is compacted once half of it is evicted, so it never
//! holds more than twice that. Huffman strings are decoded into a scratch buffer reused across
//! fields and blocks (bounded by the block being decoded); other strings are borrowed from the
//! block. Decoding allocates nothing in the steady state.

use std::collections::VecDeque;
use std::ops::Range;

use super::huffman;
use crate::{Error, Result};

/// The initial table size, SETTINGS_HEADER_TABLE_SIZE's default (RFC 9113, section 6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// The largest table this decoder keeps, whatever size the peer signals: entries that fall out of
/// it are unknown, not wrong.
pub const MAX_TABLE_SIZE: usize = 64 * 1024;

/// Scratch capacity kept between blocks; one huge block does not pin its memory forever.
const SCRATCH_KEEP: usize = 16 * 1024;

/// What HPACK adds to an entry's name and value lengths to size it (RFC 7541, section 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Indices past the static table refer to the dynamic table.
const STATIC_LEN: usize = 61;

/// The static table (RFC 7541, Appendix A); index 1 first.
const STATIC_TABLE: [(&[u8], &[u8]); STATIC_LEN] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// One decoded header field. Unknown parts refer to table entries this decoder never saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// `None`: the name is an entry this decoder does not know.
    pub name: Option<&'a [u8]>,
    /// `None`: the whole field is an entry this decoder does not know.
    pub value: Option<&'a [u8]>,
    /// Sent as a never-indexed literal: the sender marked it sensitive.
    pub never_indexed: bool,
}

/// The header fields an HTTP/2 or gRPC parser looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnownName {
    Method,
    Path,
    Scheme,
    Authority,
    Status,
    ContentType,
    ContentLength,
    GrpcStatus,
    GrpcMessage,
    Traceparent,
}

impl KnownName {
    /// The known field `name` is (names are lowercase in HTTP/2).
    pub fn of(name: &[u8]) -> Option<Self> {
        Some(match name {
            b":method" => Self::Method,
            b":path" => Self::Path,
            b":scheme" => Self::Scheme,
            b":authority" => Self::Authority,
            b":status" => Self::Status,
            b"content-type" => Self::ContentType,
            b"content-length" => Self::ContentLength,
            b"grpc-status" => Self::GrpcStatus,
            b"grpc-message" => Self::GrpcMessage,
            b"traceparent" => Self::Traceparent,
            _ => return None,
        })
    }
}

impl Field<'_> {
    /// Which of the fields parsers look for this is, if any.
    pub fn known_name(&self) -> Option<KnownName> {
        self.name.and_then(KnownName::of)
    }
}

/// Decodes the header blocks of one direction of a connection, in order.
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    table: Table,
    /// Huffman-decoded strings of the field being decoded.
    scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder with the default table size. It knows no entries yet: at the start of a
    /// connection that is the whole table; joined mid-stream, it is a prefix of it.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder for a direction whose receiver announced SETTINGS_HEADER_TABLE_SIZE `size`
    /// before the first header block.
    pub fn with_table_size(size: usize) -> Self {
        let mut decoder = Self::default();
        decoder.table.resize(size);
        decoder
    }

    /// Decodes one header block, calling `visit` for each field in order.
    ///
    /// `whole` says the block is complete; otherwise it is the visible prefix of a block that was
    /// cut off: the fields wholly inside it are reported and then every table entry is forgotten.
    /// An invalid block is an error after the fields before the fault were reported, and also
    /// forgets every entry.
    pub fn decode<F>(&mut self, block: &[u8], whole: bool, mut visit: F) -> Result<()>
    where
        F: FnMut(Field<'_>),
    {
        let mut cursor = Cursor {
            bytes: block,
            pos: 0,
        };
        let mut fields = 0usize;
        let outcome = loop {
            if cursor.pos == block.len() {
                break Ok(());
            }
            match self.representation(&mut cursor, fields == 0, &mut visit) {
                Ok(field) => fields += usize::from(field),
                Err(Stop::Truncated) if whole => {
                    break Err(Error::Hpack("header block ends inside a field"));
                }
                Err(Stop::Truncated) => break Ok(()),
                Err(Stop::Invalid(e)) => break Err(e),
            }
        };
        // A cut block may have inserted entries after the cut, even if it was cut between fields.
        if outcome.is_err() || !whole {
            self.desync();
        }
        self.scratch.clear();
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch.shrink_to(SCRATCH_KEEP);
        }
        outcome
    }

    /// Forgets every table entry: a header block may have been missed, so indices past the
    /// static table can no longer be trusted.
    pub fn desync(&mut self) {
        self.table.clear();
    }

    /// Dynamic table entries this decoder knows: the newest of the peer's table.
    pub fn known_entries(&self) -> usize {
        self.table.entries.len()
    }

    /// Heap bytes held: the table's entries and the Huffman scratch buffer.
    pub fn heap_bytes(&self) -> usize {
        self.table.bytes.capacity()
            + self.table.entries.capacity() * size_of::<Entry>()
            + self.scratch.capacity()
    }

    /// Decodes one representation; `true` if it was a field (not a size update).
    fn representation<F>(
        &mut self,
        cursor: &mut Cursor<'_>,
        block_start: bool,
        visit: &mut F,
    ) -> Result<bool, Stop>
    where
        F: FnMut(Field<'_>),
    {
        let first = cursor.byte()?;
        if first & 0x80 != 0 {
            // Indexed field (RFC 7541, section 6.1).
            let (name, value) = self.table.lookup(cursor.integer(first, 7)?)?;
            visit(Field {
                name: self.resolve(cursor.bytes, &name),
                value: self.resolve(cursor.bytes, &value),
                never_indexed: false,
            });
            return Ok(true);
        }
        if first & 0xe0 == 0x20 {
            // Dynamic table size update (section 6.3), allowed only before the first field.
            let size = cursor.integer(first, 5)?;
            if !block_start {
                return Err(Stop::Invalid(Error::Hpack(
                    "table size update after a header field",
                )));
            }
            self.table.resize(size);
            return Ok(false);
        }
        // Literals (section 6.2): with incremental indexing (01), never indexed (0001), or
        // without indexing (0000).
        let indexing = first & 0x40 != 0;
        let prefix = if indexing { 6 } else { 4 };
        let never_indexed = !indexing && first & 0x10 != 0;
        self.scratch.clear();
        let name = match cursor.integer(first, prefix)? {
            0 => self.string(cursor)?,
            index => self.table.lookup(index)?.0,
        };
        let value = self.string(cursor)?;
        visit(Field {
            name: self.resolve(cursor.bytes, &name),
            value: self.resolve(cursor.bytes, &value),
            never_indexed,
        });
        if indexing {
            let Self { table, scratch } = self;
            let value = match &value {
                Str::Block(range) => &cursor.bytes[range.clone()],
                Str::Scratch(range) => &scratch[range.clone()],
                // Values always come from the block or the scratch buffer.
                _ => &[],
            };
            let name = match &name {
                Str::Static(bytes) => NameSource::Bytes(bytes),
                Str::Block(range) => NameSource::Bytes(&cursor.bytes[range.clone()]),
                Str::Scratch(range) => NameSource::Bytes(&scratch[range.clone()]),
                Str::Table(range) => NameSource::Table(range.clone()),
                Str::Unknown => NameSource::Unknown,
            };
            table.insert(name, value);
        }
        Ok(true)
    }

    /// Reads a string literal (section 5.2), Huffman-decoding it into the scratch buffer.
    fn string(&mut self, cursor: &mut Cursor<'_>) -> Result<Str, Stop> {
        let first = cursor.byte()?;
        let len = cursor.integer(first, 7)?;
        let range = cursor.take(len)?;
        if first & 0x80 == 0 {
            return Ok(Str::Block(range));
        }
        let start = self.scratch.len();
        huffman::decode(&cursor.bytes[range], &mut self.scratch).map_err(Stop::Invalid)?;
        Ok(Str::Scratch(start..self.scratch.len()))
    }

    fn resolve<'s>(&'s self, block: &'s [u8], s: &Str) -> Option<&'s [u8]> {
        match s {
            Str::Static(bytes) => Some(bytes),
            Str::Block(range) => block.get(range.clone()),
            Str::Scratch(range) => self.scratch.get(range.clone()),
            Str::Table(range) => self.table.bytes.get(range.clone()),
            Str::Unknown => None,
        }
    }

    #[cfg(test)]
    fn table_entries(&self) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        (0..self.table.entries.len())
            .map(|i| {
                let (name, value) = self.table.dynamic(i);
                (
                    self.resolve(&[], &name).map(<[u8]>::to_vec),
                    self.resolve(&[], &value)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// Why decoding a representation stopped.
#[derive(Debug)]
enum Stop {
    /// The block ends inside it.
    Truncated,
    Invalid(Error),
}

/// Where a decoded string lies.
#[derive(Clone, Debug)]
enum Str {
    Static(&'static [u8]),
    Block(Range<usize>),
    Scratch(Range<usize>),
    Table(Range<usize>),
    Unknown,
}

/// The name of an entry being inserted.
enum NameSource<'a> {
    Bytes(&'a [u8]),
    /// A name already in the table's buffer.
    Table(Range<usize>),
    Unknown,
}

struct Cursor<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, Stop> {
        let byte = *self.bytes.get(self.pos).ok_or(Stop::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    /// An integer with a `prefix`-bit prefix in `first` (RFC 7541, section 5.1). Values above
    /// `u32::MAX` are invalid: no length or index an honest peer sends comes close, and the
    /// bound keeps a run of continuation bytes from going on forever.
    fn integer(&mut self, first: u8, prefix: u8) -> Result<usize, Stop> {
        let max_prefix = u8::MAX >> (8 - prefix);
        let mut value = u64::from(first & max_prefix);
        if value < u64::from(max_prefix) {
            return Ok(value as usize);
        }
        let mut shift = 0;
        loop {
            let byte = self.byte()?;
            value += u64::from(byte & 0x7f) << shift;
            if value > u64::from(u32::MAX) {
                return Err(Stop::Invalid(Error::Hpack("integer overflow")));
            }
            if byte & 0x80 == 0 {
                return Ok(value as usize);
            }
            shift += 7;
            if shift > 28 {
                return Err(Stop::Invalid(Error::Hpack("integer too long")));
            }
        }
    }

    fn take(&mut self, len: usize) -> Result<Range<usize>, Stop> {
        let end = self.pos.checked_add(len).ok_or(Stop::Truncated)?;
        if end > self.bytes.len() {
            return Err(Stop::Truncated);
        }
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }
}

/// The known newest entries of the peer's dynamic table.
#[derive(Clone, Debug)]
struct Table {
    /// Name and value bytes of the entries, oldest first, from the oldest entry's `start` on;
    /// bytes before it belong to evicted entries and are dropped in bulk.
    bytes: Vec<u8>,
    /// Oldest first.
    entries: VecDeque<Entry>,
    /// HPACK size of the entries, names of unknown length counted as empty.
    size: usize,
    /// The table size the peer uses, as far as this decoder knows.
    capacity: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    name_len: usize,
    value_len: usize,
    name_known: bool,
}

impl Entry {
    fn size(&self) -> usize {
        self.name_len + self.value_len + ENTRY_OVERHEAD
    }
}

impl Default for Table {
    fn default() -> Self {
        Self {
            bytes: Vec::new(),
            entries: VecDeque::new(),
            size: 0,
            capacity: DEFAULT_TABLE_SIZE,
        }
    }
}

impl Table {
    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.size = 0;
    }

    /// Name and value of table index `index` (1-based, static table first).
    fn lookup(&self, index: usize) -> Result<(Str, Str), Stop> {
        match index {
            0 => Err(Stop::Invalid(Error::Hpack("table index 0"))),
            1..=STATIC_LEN => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((Str::Static(name), Str::Static(value)))
            }
            _ => Ok(self.dynamic(index - STATIC_LEN - 1)),
        }
    }

    /// Dynamic entry `i`, 0 being the newest; unknown past the known ones.
    fn dynamic(&self, i: usize) -> (Str, Str) {
        let Some(entry) = self
            .entries
            .len()
            .checked_sub(i + 1)
            .and_then(|at| self.entries.get(at))
        else {
            return (Str::Unknown, Str::Unknown);
        };
        let value_start = entry.start + entry.name_len;
        let name = if entry.name_known {
            Str::Table(entry.start..value_start)
        } else {
            Str::Unknown
        };
        (name, Str::Table(value_start..value_start + entry.value_len))
    }

    /// A dynamic table size update: evict down to the new size.
    fn resize(&mut self, size: usize) {
        self.capacity = size.min(MAX_TABLE_SIZE);
        self.evict();
    }

    fn insert(&mut self, name: NameSource<'_>, value: &[u8]) {
        let name_len = match &name {
            NameSource::Bytes(bytes) => bytes.len(),
            NameSource::Table(range) => range.len(),
            NameSource::Unknown => 0,
        };
        let entry = Entry {
            start: self.bytes.len(),
            name_len,
            value_len: value.len(),
            name_known: !matches!(name, NameSource::Unknown),
        };
        if entry.size() > self.capacity {
            // Too large for the table: the peer empties its table and adds nothing (section 4.4).
            // Not copying it first keeps the buffer within the table size.
            self.clear();
            return;
        }
        // The name is copied before anything is evicted: it may be the entry that makes room.
        match name {
            NameSource::Bytes(bytes) => self.bytes.extend_from_slice(bytes),
            NameSource::Table(range) => self.bytes.extend_from_within(range),
            NameSource::Unknown => {}
        }
        self.bytes.extend_from_slice(value);
        self.size += entry.size();
        self.entries.push_back(entry);
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.capacity {
            let Some(oldest) = self.entries.pop_front() else {
                break;
            };
            self.size -= oldest.size();
        }
        let dead = self.entries.front().map_or(self.bytes.len(), |e| e.start);
        if dead > 0 && dead * 2 >= self.bytes.len() {
            self.bytes.drain(..dead);
            for entry in &mut self.entries {
                entry.start -= dead;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http2::huffman;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// A decoded field as owned bytes; `None` parts are unknown.
    type Owned = (Option<Vec<u8>>, Option<Vec<u8>>);

    fn owned(field: Field<'_>) -> Owned {
        (
            field.name.map(<[u8]>::to_vec),
            field.value.map(<[u8]>::to_vec),
        )
    }

    fn decode_all(decoder: &mut Decoder, block: &[u8]) -> Vec<Owned> {
        let mut fields = Vec::new();
        decoder
            .decode(block, true, |f| fields.push(owned(f)))
            .unwrap();
        fields
    }

    fn known(pairs: &[(&str, &str)]) -> Vec<Owned> {
        pairs
            .iter()
            .map(|(n, v)| (Some(n.as_bytes().to_vec()), Some(v.as_bytes().to_vec())))
            .collect()
    }

    fn table(pairs: &[(&str, &str)]) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (Some(n.as_bytes().to_vec()), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn static_table_spot_checks() {
        assert_eq!(STATIC_TABLE[0], (&b":authority"[..], &b""[..]));
        assert_eq!(
            STATIC_TABLE[15],
            (&b"accept-encoding"[..], &b"gzip, deflate"[..])
        );
        assert_eq!(STATIC_TABLE[30].0, b"content-type");
        assert_eq!(STATIC_TABLE[53].0, b"server");
        assert_eq!(STATIC_TABLE[60].0, b"www-authenticate");
    }

    /// RFC 7541 C.2: one representation of each kind.
    #[test]
    fn rfc_c2_single_representations() {
        let mut d = Decoder::new();
        let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        assert_eq!(
            decode_all(&mut d, &block),
            known(&[("custom-key", "custom-header")])
        );
        assert_eq!(d.table_entries(), table(&[("custom-key", "custom-header")]));
        assert_eq!(d.table.size, 55);

        let mut d = Decoder::new();
        let block = hex("040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(
            decode_all(&mut d, &block),
            known(&[(":path", "/sample/path")])
        );
        assert_eq!(d.known_entries(), 0);

        let mut d = Decoder::new();
        let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        let mut never = Vec::new();
        d.decode(&block, true, |f| never.push((owned(f), f.never_indexed)))
            .unwrap();
        assert_eq!(never, [(known(&[("password", "secret")])[0].clone(), true)]);
        assert_eq!(d.known_entries(), 0);

        let mut d = Decoder::new();
        assert_eq!(decode_all(&mut d, &[0x82]), known(&[(":method", "GET")]));
        assert_eq!(d.known_entries(), 0);
    }

    /// RFC 7541 C.3 (plain) and C.4 (Huffman): three requests on one connection.
    #[test]
    fn rfc_c3_c4_requests() {
        let plain = [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ];
        let huffman = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ];
        let first = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        let expected = [
            (
                known(&first),
                table(&[(":authority", "www.example.com")]),
                57,
            ),
            (
                known(&[&first[..], &[("cache-control", "no-cache")]].concat()),
                table(&[
                    ("cache-control", "no-cache"),
                    (":authority", "www.example.com"),
                ]),
                110,
            ),
            (
                known(&[
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/index.html"),
                    (":authority", "www.example.com"),
                    ("custom-key", "custom-value"),
                ]),
                table(&[
                    ("custom-key", "custom-value"),
                    ("cache-control", "no-cache"),
                    (":authority", "www.example.com"),
                ]),
                164,
            ),
        ];
        for blocks in [plain, huffman] {
            let mut d = Decoder::new();
            for (block, (fields, entries, size)) in blocks.iter().zip(&expected) {
                assert_eq!(&decode_all(&mut d, &hex(block)), fields, "{block}");
                assert_eq!(&d.table_entries(), entries, "{block}");
                assert_eq!(d.table.size, *size, "{block}");
            }
        }
    }

    /// RFC 7541 C.5 (plain) and C.6 (Huffman): three responses through a 256-byte table, with
    /// evictions.
    #[test]
    fn rfc_c5_c6_responses_with_eviction() {
        let plain = [
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
             3d31",
        ];
        let huffman = [
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ];
        let date1 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT");
        let date2 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT");
        let location = ("location", "https://www.example.com");
        let private = ("cache-control", "private");
        let cookie = (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        );
        let expected = [
            (
                known(&[(":status", "302"), private, date1, location]),
                table(&[location, date1, private, (":status", "302")]),
                222,
            ),
            (
                known(&[(":status", "307"), private, date1, location]),
                table(&[(":status", "307"), location, date1, private]),
                222,
            ),
            (
                known(&[
                    (":status", "200"),
                    private,
                    date2,
                    location,
                    ("content-encoding", "gzip"),
                    cookie,
                ]),
                table(&[cookie, ("content-encoding", "gzip"), date2]),
                215,
            ),
        ];
        for blocks in [plain, huffman] {
            let mut d = Decoder::with_table_size(256);
            for (block, (fields, entries, size)) in blocks.iter().zip(&expected) {
                assert_eq!(&decode_all(&mut d, &hex(block)), fields, "{block}");
                assert_eq!(&d.table_entries(), entries, "{block}");
                assert_eq!(d.table.size, *size, "{block}");
            }
        }
    }

    fn integer(bytes: &[u8], prefix: u8) -> Result<usize, Stop> {
        let mut cursor = Cursor { bytes, pos: 1 };
        let value = cursor.integer(bytes[0], prefix)?;
        assert_eq!(cursor.pos, bytes.len(), "{bytes:02x?} not wholly consumed");
        Ok(value)
    }

    #[test]
    fn integer_edge_cases() {
        // RFC 7541 C.1: 10 in a 5-bit prefix, 1337 in a 5-bit prefix, 42 at an octet boundary.
        assert_eq!(integer(&[0b1110_1010], 5).unwrap(), 10);
        assert_eq!(integer(&[0x1f, 0x9a, 0x0a], 5).unwrap(), 1337);
        assert_eq!(integer(&[42], 8).unwrap(), 42);
        // Bits above the prefix are not part of the value.
        assert_eq!(integer(&[0xfe], 7).unwrap(), 126);
        // A full prefix needs a continuation: zero adds nothing.
        assert_eq!(integer(&[0x7f, 0x00], 7).unwrap(), 127);
        assert_eq!(integer(&[0x0f, 0x00], 4).unwrap(), 15);
        // Redundant zero continuations are allowed up to the length limit.
        assert_eq!(integer(&[0x7f, 0x80, 0x80, 0x00], 7).unwrap(), 127);
        // u32::MAX is the largest value: 2^32 - 1 - 127 in 7-bit groups.
        assert_eq!(
            integer(&[0x7f, 0x80, 0xff, 0xff, 0xff, 0x0f], 7).unwrap(),
            u32::MAX as usize
        );
        assert!(matches!(
            integer(&[0x7f, 0x81, 0xff, 0xff, 0xff, 0x0f], 7),
            Err(Stop::Invalid(_))
        ));
        assert!(matches!(
            integer(&[0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], 7),
            Err(Stop::Invalid(_))
        ));
        assert!(matches!(integer(&[0x1f], 5), Err(Stop::Truncated)));
        assert!(matches!(integer(&[0x1f, 0x9a], 5), Err(Stop::Truncated)));
    }

    #[test]
    fn invalid_blocks_are_errors_and_forget_the_table() {
        for bad in [
            &[0x80][..],                           // index 0
            &[0x82, 0x3f, 0xe1, 0x1f],             // size update after a field
            &[0x41, 0x81, 0x00],                   // Huffman value with zero padding
            &[0x41, 0x84, 0xff, 0xff, 0xff, 0xff], // Huffman value containing EOS
            &[0x7f, 0xff, 0xff, 0xff, 0xff, 0x7f], // index overflow
        ] {
            let mut d = Decoder::new();
            decode_all(&mut d, &hex("400a 6375 7374 6f6d 2d6b 6579 0161"));
            assert_eq!(d.known_entries(), 1);
            let mut fields = 0;
            assert!(d.decode(bad, true, |_| fields += 1).is_err(), "{bad:02x?}");
            assert_eq!(d.known_entries(), 0, "{bad:02x?}");
            assert!(fields <= 1, "{bad:02x?}");
        }
        // A whole block that ends inside a field is invalid too.
        let mut d = Decoder::new();
        assert!(d.decode(&[0x82, 0x41], true, |_| {}).is_err());
    }

    #[test]
    fn size_updates_evict_and_are_capped() {
        let mut d = Decoder::new();
        let block = hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        decode_all(&mut d, &block);
        assert_eq!(d.known_entries(), 1);
        // Two updates at block start (down to 0, then back up) are allowed and empty the table.
        assert_eq!(decode_all(&mut d, &[0x20, 0x3f, 0xe1, 0x1f, 0x82]).len(), 1);
        assert_eq!(d.known_entries(), 0);
        assert_eq!(d.table.capacity, 4096);
        // A peer asking for more than the cap gets the cap.
        decode_all(&mut d, &[0x3f, 0xe1, 0xff, 0xff, 0x03]);
        assert_eq!(d.table.capacity, MAX_TABLE_SIZE);
        // An entry larger than the table empties it and is not added, but is still reported.
        let mut d = Decoder::with_table_size(40);
        decode_all(&mut d, &hex("4001 6101 62")); // a: b, 34 bytes
        assert_eq!(d.known_entries(), 1);
        let fields = decode_all(&mut d, &hex("4001 6304 6464 6464")); // c: dddd, 37 bytes
        assert_eq!(fields, known(&[("c", "dddd")]));
        assert_eq!(d.table_entries(), table(&[("c", "dddd")]));
        let fields = decode_all(&mut d, &hex("4001 6508 6666 6666 6666 6666")); // 41 bytes
        assert_eq!(fields, known(&[("e", "ffffffff")]));
        assert_eq!(d.known_entries(), 0);
        // However large the literal, the table's buffer stays within the table size.
        let mut d = Decoder::new();
        let mut block = vec![0x40, 0x01, b'h', 0x7f, 0xa1, 0x8c, 0x06];
        block.resize(block.len() + 100_000, b'x');
        assert_eq!(
            decode_all(&mut d, &block)[0].1.as_ref().map(Vec::len),
            Some(100_000)
        );
        assert!(d.table.bytes.capacity() <= DEFAULT_TABLE_SIZE);
    }

    #[test]
    fn name_of_an_evicted_entry_is_kept_for_the_new_one() {
        // The new entry's name is the only entry, which must be evicted to make room.
        let mut d = Decoder::with_table_size(70);
        decode_all(&mut d, &hex("400a 6375 7374 6f6d 2d6b 6579 0161")); // custom-key: a (43)
        let fields = decode_all(&mut d, &hex("7e01 62")); // name index 62, value b
        assert_eq!(fields, known(&[("custom-key", "b")]));
        assert_eq!(d.table_entries(), table(&[("custom-key", "b")]));
    }

    #[test]
    fn compaction_keeps_entries_intact() {
        let mut d = Decoder::with_table_size(200);
        for i in 0..500u32 {
            let value = format!("value-{i}");
            let mut block = vec![0x40, 0x04];
            block.extend_from_slice(b"name");
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
            decode_all(&mut d, &block);
            let entries = d.table_entries();
            assert_eq!(entries[0], (Some(b"name".to_vec()), value.into_bytes()));
            assert!(d.table.bytes.len() <= 2 * 200);
        }
        // 44-byte entries ("name" + "value-NNN" + 32) in a 200-byte table: four of them.
        assert_eq!(d.known_entries(), 4);
        assert_eq!(decode_all(&mut d, &[0xc1]), known(&[("name", "value-496")]));
    }

    #[test]
    fn unknown_entries_are_reported_unknown_and_still_take_an_index() {
        let mut d = Decoder::new();
        // Joined late: index 62 is unknown, as is the name of a literal that refers to it.
        let block = [
            0xbe, // indexed 62
            0x7e, 0x01, b'v', // literal with indexing, name index 62, value "v"
            0x82,
        ];
        assert_eq!(
            decode_all(&mut d, &block),
            vec![
                (None, None),
                (None, Some(b"v".to_vec())),
                (Some(b":method".to_vec()), Some(b"GET".to_vec())),
            ]
        );
        assert_eq!(d.known_entries(), 1);
        // The entry with the unknown name is index 62 now; what was 62 is 63.
        let block = [0x40, 0x01, b'n', 0x01, b'w', 0xbe, 0xbf, 0xc0];
        assert_eq!(
            decode_all(&mut d, &block),
            vec![
                (Some(b"n".to_vec()), Some(b"w".to_vec())),
                (Some(b"n".to_vec()), Some(b"w".to_vec())),
                (None, Some(b"v".to_vec())),
                (None, None),
            ]
        );
    }

    #[test]
    fn cut_blocks_report_whole_fields_then_forget_the_table() {
        let block = hex("8286 84be 5886 a8eb 1064 9cbf");
        let mut synced = Decoder::new();
        decode_all(
            &mut synced,
            &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
        );
        let whole = decode_all(&mut synced.clone(), &block);
        for cut in 0..block.len() {
            let mut d = synced.clone();
            let mut fields = Vec::new();
            d.decode(&block[..cut], false, |f| fields.push(owned(f)))
                .unwrap();
            assert!(whole.starts_with(&fields), "cut {cut}: {fields:?}");
            assert_eq!(d.known_entries(), 0, "cut {cut}");
        }
        // The first four fields are one byte each.
        let mut d = synced.clone();
        let mut fields = Vec::new();
        d.decode(&block[..5], false, |f| fields.push(owned(f)))
            .unwrap();
        assert_eq!(fields, whole[..4]);
    }

    #[test]
    fn known_names() {
        let mut d = Decoder::new();
        let mut found = Vec::new();
        let mut block = vec![0x82, 0x84, 0x86, 0x81, 0x88, 0x5f, 0x00, 0x5c, 0x00];
        for name in ["grpc-status", "grpc-message", "traceparent", "x-other"] {
            block.extend_from_slice(&[0x00, name.len() as u8]);
            block.extend_from_slice(name.as_bytes());
            block.push(0x00);
        }
        d.decode(&block, true, |f| found.push(f.known_name()))
            .unwrap();
        use KnownName::*;
        assert_eq!(
            found,
            [
                Some(Method),
                Some(Path),
                Some(Scheme),
                Some(Authority),
                Some(Status),
                Some(ContentType),
                Some(ContentLength),
                Some(GrpcStatus),
                Some(GrpcMessage),
                Some(Traceparent),
                None
            ]
        );
    }

    /// A small HPACK encoder with a real table, for the table-size tests: literals with
    /// incremental indexing (Huffman when shorter), indexed fields for repeats, and the size
    /// update of its choice. Beside each entry it tracks what an observer that joined at block
    /// `join` (and keeps every entry the peer keeps) can know of it.
    struct TestEncoder {
        /// Newest first: name, value, observer knows the name, observer knows the value.
        entries: VecDeque<(Vec<u8>, Vec<u8>, bool, bool)>,
        size: usize,
        capacity: usize,
        join: usize,
    }

    impl TestEncoder {
        fn integer(out: &mut Vec<u8>, first: u8, prefix: u8, mut value: usize) {
            let max = (1usize << prefix) - 1;
            if value < max {
                out.push(first | value as u8);
                return;
            }
            out.push(first | max as u8);
            value -= max;
            while value >= 128 {
                out.push((value % 128) as u8 | 0x80);
                value /= 128;
            }
            out.push(value as u8);
        }

        fn string(out: &mut Vec<u8>, text: &[u8]) {
            let coded = huffman::encode(text);
            if coded.len() < text.len() {
                Self::integer(out, 0x80, 7, coded.len());
                out.extend_from_slice(&coded);
            } else {
                Self::integer(out, 0, 7, text.len());
                out.extend_from_slice(text);
            }
        }

        fn set_size(&mut self, out: &mut Vec<u8>, size: usize) {
            self.capacity = size;
            self.evict();
            Self::integer(out, 0x20, 5, size);
        }

        fn evict(&mut self) {
            while self.size > self.capacity {
                let Some((n, v, ..)) = self.entries.pop_back() else {
                    break;
                };
                self.size -= n.len() + v.len() + 32;
            }
        }

        /// Encodes one field of block `block`; returns what the late observer can know of it.
        fn field(
            &mut self,
            out: &mut Vec<u8>,
            block: usize,
            name: &[u8],
            value: &[u8],
        ) -> (bool, bool) {
            let seen = block >= self.join;
            if let Some(i) = self
                .entries
                .iter()
                .position(|(n, v, ..)| n == name && v == value)
            {
                Self::integer(out, 0x80, 7, 62 + i);
                let (_, _, name_known, value_known) = self.entries[i];
                return (name_known, value_known);
            }
            let name_known = match self.entries.iter().position(|(n, ..)| n == name) {
                Some(i) => {
                    Self::integer(out, 0x40, 6, 62 + i);
                    self.entries[i].2
                }
                None => {
                    out.push(0x40);
                    Self::string(out, name);
                    true
                }
            };
            Self::string(out, value);
            let size = name.len() + value.len() + 32;
            if size > self.capacity {
                self.entries.clear();
                self.size = 0;
            } else {
                self.entries
                    .push_front((name.to_vec(), value.to_vec(), name_known && seen, seen));
                self.size += size;
                self.evict();
            }
            (name_known || !seen, true)
        }
    }

    /// Pseudo-random header lists with repeats, so blocks mix indexed fields, literals with
    /// indexed names and new names.
    fn header_lists(seed: u64, blocks: usize) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut state = seed;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        (0..blocks)
            .map(|_| {
                (0..1 + next(8))
                    .map(|_| {
                        let name = format!("x-name-{}", next(12)).into_bytes();
                        let value = "v".repeat(1 + next(40) as usize).into_bytes();
                        (name, value)
                    })
                    .collect()
            })
            .collect()
    }

    /// Whatever table size the observer assumes, a field it resolves is the field the peer
    /// sent; assuming at least the real size, it resolves exactly what it can know.
    #[test]
    fn wrong_table_size_estimates_never_resolve_a_field_wrongly() {
        const JOIN: usize = 3;
        for (real_size, seed) in [(256usize, 1u64), (1024, 2), (4096, 3), (20000, 4), (0, 5)] {
            let lists = header_lists(seed, 200);
            let mut encoder = TestEncoder {
                entries: VecDeque::new(),
                size: 0,
                capacity: DEFAULT_TABLE_SIZE,
                join: JOIN,
            };
            let mut blocks = Vec::new();
            let mut knowable = Vec::new();
            for (i, list) in lists.iter().enumerate() {
                let mut block = Vec::new();
                if i == 0 {
                    encoder.set_size(&mut block, real_size);
                }
                let known: Vec<(bool, bool)> = list
                    .iter()
                    .map(|(name, value)| encoder.field(&mut block, i, name, value))
                    .collect();
                blocks.push(block);
                knowable.push(known);
            }
            // Synced from the start: resolves everything.
            let mut synced = Decoder::new();
            for (block, list) in blocks.iter().zip(&lists) {
                let expected: Vec<Owned> = list
                    .iter()
                    .map(|(n, v)| (Some(n.clone()), Some(v.clone())))
                    .collect();
                assert_eq!(decode_all(&mut synced, block), expected, "size {real_size}");
            }
            // Joined at block JOIN, after the size update, with sizes too small and too large.
            for assumed in [0, 300, DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE] {
                let mut late = Decoder::with_table_size(assumed);
                let mut unknown = 0;
                for i in JOIN..blocks.len() {
                    let fields = decode_all(&mut late, &blocks[i]);
                    assert_eq!(fields.len(), lists[i].len());
                    for (j, (name, value)) in fields.iter().enumerate() {
                        let (real_name, real_value) = &lists[i][j];
                        let context = format!("real {real_size}, assumed {assumed}, block {i}");
                        if let Some(name) = name {
                            assert_eq!(name, real_name, "{context}");
                        }
                        if let Some(value) = value {
                            assert_eq!(value, real_value, "{context}");
                        }
                        if assumed >= real_size {
                            assert_eq!(
                                (name.is_some(), value.is_some()),
                                knowable[i][j],
                                "{context}, field {j}"
                            );
                        }
                        unknown += usize::from(name.is_none() || value.is_none());
                    }
                }
                if assumed == 0 && real_size > 0 {
                    assert!(unknown > 0, "real {real_size}");
                }
            }
        }
    }

    mod golden {
        use super::*;
        use crate::connection::stream::Chunk;
        use crate::protocol::http2::frame::test_support::{self as frames, chunk, streams};
        use crate::protocol::http2::frame::{
            Event, FrameReader, FrameType, Payload, Sender, flags,
        };

        /// A field with its bytes copied out: name, value (`None`: unknown), never indexed.
        type Seen = (Option<Vec<u8>>, Option<Vec<u8>>, bool);

        /// What a parser built on the frame reader and the decoder sees of a stream.
        #[derive(Clone, Debug, PartialEq, Eq)]
        enum Observed {
            Frame(frames::Seen),
            /// The fields of a header block; `whole` is false when it was cut off.
            Block {
                stream: u32,
                fields: Vec<Seen>,
                whole: bool,
            },
        }

        /// Frames in, header blocks decoded: HEADERS and PUSH_PROMISE fragments joined with
        /// their CONTINUATIONs, the decoder told when blocks may have been missed.
        struct Observer {
            reader: FrameReader,
            decoder: Decoder,
            block: Vec<u8>,
            /// The stream whose block is being gathered, and whether it is still whole.
            open: Option<(u32, bool)>,
            seen: Vec<Observed>,
        }

        impl Observer {
            fn new(reader: FrameReader) -> Self {
                Self {
                    reader,
                    decoder: Decoder::new(),
                    block: Vec::new(),
                    open: None,
                    seen: Vec::new(),
                }
            }

            fn feed(&mut self, chunk: &Chunk<'_>) {
                let Self {
                    reader,
                    decoder,
                    block,
                    open,
                    seen,
                } = self;
                reader.feed(chunk, |event| {
                    seen.push(Observed::Frame(frames::Seen::of(event)));
                    let frame = match event {
                        Event::Frame(frame) => frame,
                        Event::Lost => {
                            decoder.desync();
                            *open = None;
                            return;
                        }
                        _ => return,
                    };
                    let header = frame.header;
                    let fragment = match (header.kind, frame.payload, *open) {
                        (FrameType::Headers | FrameType::PushPromise, _, _) => {
                            block.clear();
                            *open = Some((header.stream_id, true));
                            frame.payload
                        }
                        (FrameType::Continuation, _, Some((stream, _)))
                            if stream == header.stream_id =>
                        {
                            frame.payload
                        }
                        _ => return,
                    };
                    let Some((stream, whole)) = *open else {
                        return;
                    };
                    let promised = if header.kind == FrameType::PushPromise {
                        4
                    } else {
                        0
                    };
                    let still_whole = match fragment {
                        Payload::Complete(bytes) => {
                            block.extend_from_slice(bytes.get(promised..).unwrap_or_default());
                            whole
                        }
                        Payload::Truncated(bytes) => {
                            block.extend_from_slice(bytes.get(promised..).unwrap_or_default());
                            false
                        }
                        _ => false,
                    };
                    // Decoded once: when the block ends, or as far as it goes when it is cut off.
                    if whole && (!still_whole || header.has(flags::END_HEADERS)) {
                        let mut fields = Vec::new();
                        let result = decoder.decode(block, still_whole, |f| {
                            fields.push((
                                f.name.map(<[u8]>::to_vec),
                                f.value.map(<[u8]>::to_vec),
                                f.never_indexed,
                            ))
                        });
                        assert!(result.is_ok(), "{result:?}");
                        seen.push(Observed::Block {
                            stream,
                            fields,
                            whole: still_whole,
                        });
                        *open = Some((stream, false));
                    }
                    if header.has(flags::END_HEADERS) {
                        *open = None;
                    }
                });
            }
        }

        fn observe(sender: Sender, chunks: &[Chunk<'_>]) -> Vec<Observed> {
            observe_with(FrameReader::new(sender), chunks)
        }

        fn observe_with(reader: FrameReader, chunks: &[Chunk<'_>]) -> Vec<Observed> {
            let mut observer = Observer::new(reader);
            for chunk in chunks {
                observer.feed(chunk);
            }
            observer.seen
        }

        fn show(bytes: &[u8]) -> String {
            if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
                String::from_utf8_lossy(bytes).into_owned()
            } else {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                format!("hex:{hex}")
            }
        }

        /// The decoded captures print exactly as the independent decoder (python-hyper's hpack)
        /// listed them, and no field is unknown.
        #[test]
        fn golden_header_blocks_match_the_listing() {
            for (file, bytes, sender) in streams() {
                let expected = String::from_utf8(frames::golden(&format!("{file}.txt"))).unwrap();
                let mut printed = String::new();
                for seen in observe(sender, &[chunk(&bytes, 0, true)]) {
                    match seen {
                        Observed::Frame(frames::Seen::Preface) => printed.push_str("PREFACE\n"),
                        Observed::Frame(frames::Seen::Frame(header, _)) => {
                            printed.push_str(&frames::describe(&header));
                            printed.push('\n');
                        }
                        Observed::Frame(other) => panic!("{file}: {other:?}"),
                        Observed::Block { fields, whole, .. } => {
                            assert!(whole, "{file}");
                            for (name, value, never) in fields {
                                let (Some(name), Some(value)) = (name, value) else {
                                    panic!("{file}: unknown field in a synced decoder");
                                };
                                let mark = if never { " [never-indexed]" } else { "" };
                                printed.push_str(&format!(
                                    "  {}: {}{mark}\n",
                                    show(&name),
                                    show(&value)
                                ));
                            }
                        }
                    }
                }
                assert_eq!(printed, expected, "{file}");
            }
        }

        /// The header blocks of a whole stream, as the reader hands them over.
        fn blocks(bytes: &[u8], sender: Sender) -> Vec<Vec<u8>> {
            let mut reader = FrameReader::new(sender);
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            let mut open = false;
            reader.feed(&chunk(bytes, 0, true), |event| {
                let Event::Frame(frame) = event else { return };
                let Payload::Complete(fragment) = frame.payload else {
                    return;
                };
                match frame.header.kind {
                    FrameType::Headers => blocks.push(fragment.to_vec()),
                    FrameType::Continuation if open => {
                        if let Some(last) = blocks.last_mut() {
                            last.extend_from_slice(fragment);
                        }
                    }
                    _ => return,
                }
                open = !frame.header.has(flags::END_HEADERS);
            });
            blocks
        }

        /// A decoder that starts at a later header block (a connection joined mid-stream)
        /// resolves only what the synced decoder resolves, reports the rest unknown, and learns
        /// the entries inserted after it joined.
        #[test]
        fn golden_joined_decoders_agree_with_the_synced_one() {
            let mut unknown_total = 0;
            for (file, bytes, sender) in streams() {
                let blocks = blocks(&bytes, sender);
                let mut synced = Decoder::new();
                let expected: Vec<Vec<Owned>> =
                    blocks.iter().map(|b| decode_all(&mut synced, b)).collect();
                for start in 1..blocks.len() {
                    let mut late = Decoder::new();
                    for (i, block) in blocks.iter().enumerate().skip(start) {
                        let fields = decode_all(&mut late, block);
                        assert_eq!(fields.len(), expected[i].len(), "{file} {start} {i}");
                        for (j, ((name, value), (real_name, real_value))) in
                            fields.iter().zip(&expected[i]).enumerate()
                        {
                            let context = format!("{file}: joined at {start}, block {i} field {j}");
                            assert!(name.is_none() || name == real_name, "{context}");
                            assert!(value.is_none() || value == real_value, "{context}");
                            // Static entries and literals always resolve.
                            if late.known_entries() == 0 && i == start {
                                assert!(value.is_none() || name.is_some(), "{context}");
                            }
                            unknown_total += usize::from(value.is_none() || name.is_none());
                        }
                    }
                    // The method and path of every request resolve: h2load, curl, grpcio and
                    // Node send them from the static table or as literals (never from entries
                    // made before joining, for the values).
                    if sender == Sender::Client {
                        let mut late = Decoder::new();
                        for block in &blocks[start..] {
                            for (name, value) in decode_all(&mut late, block) {
                                if name.as_deref() == Some(b":path") {
                                    assert!(value.is_some(), "{file}");
                                }
                            }
                        }
                    }
                }
                // Joined at the last block, the decoder still agrees on the fields it resolves;
                // joined at the first, it is the synced decoder.
                let mut late = Decoder::new();
                let all: Vec<Vec<Owned>> =
                    blocks.iter().map(|b| decode_all(&mut late, b)).collect();
                assert_eq!(all, expected, "{file}");
            }
            assert!(unknown_total > 100, "{unknown_total} unknown fields in all");
        }

        /// Whether `part`, seen in a damaged capture, could be `whole`, seen in the whole one.
        fn consistent(part: &Observed, whole: &Observed) -> bool {
            match (part, whole) {
                (Observed::Frame(p), Observed::Frame(w)) => frames::consistent(p, w),
                (
                    Observed::Block {
                        stream,
                        fields,
                        whole: complete,
                    },
                    Observed::Block {
                        stream: real_stream,
                        fields: real,
                        ..
                    },
                ) => {
                    stream == real_stream
                        && (if *complete {
                            fields.len() == real.len()
                        } else {
                            fields.len() <= real.len()
                        })
                        && fields
                            .iter()
                            .zip(real)
                            .all(|((n, v, never), (rn, rv, rnever))| {
                                (n.is_none() || n == rn)
                                    && (v.is_none() || v == rv)
                                    && never == rnever
                            })
                }
                _ => false,
            }
        }

        /// Every frame and header field seen in `part` is in `whole`, in order.
        fn assert_consistent(part: &[Observed], whole: &[Observed], context: &str) {
            let relevant = |o: &&Observed| {
                !matches!(
                    o,
                    Observed::Frame(frames::Seen::Lost | frames::Seen::Resynced(_))
                )
            };
            let mut rest = whole.iter().filter(relevant);
            for seen in part.iter().filter(relevant) {
                assert!(
                    rest.any(|w| consistent(seen, w)),
                    "{context}: {seen:?} is not in the whole capture"
                );
            }
        }

        /// Every prefix, every split in two, every prefix with the rest uncaptured, and cuts
        /// with a gap after them: never a panic, never a frame or field the whole capture does
        /// not have, and without loss exactly what the whole capture gives.
        #[test]
        fn golden_truncation_sweep() {
            for (file, bytes, sender) in streams() {
                let whole = observe(sender, &[chunk(&bytes, 0, true)]);
                for cut in 0..=bytes.len() {
                    let (head, tail) = bytes.split_at(cut);
                    let context = format!("{file} cut at {cut}");
                    // More to come: a prefix of the whole observation.
                    let part = observe(sender, &[chunk(head, 0, true)]);
                    assert_eq!(part[..], whole[..part.len()], "{context}");
                    // Split in two: the same as whole.
                    let split = observe(sender, &[chunk(head, 0, true), chunk(tail, 0, false)]);
                    assert_eq!(split, whole, "{context}");
                    // The rest not captured.
                    let cut_off = observe(sender, &[chunk(head, tail.len() as u64, true)]);
                    assert_consistent(&cut_off, &whole, &context);
                    // A gap, then the rest at a boundary (resync where plausible).
                    for gap in [1usize, 9, 200] {
                        let Some(rest) = tail.get(gap..) else {
                            continue;
                        };
                        let chunks = [
                            chunk(head, 0, true),
                            chunk(&[], gap as u64, false),
                            chunk(rest, 0, true),
                        ];
                        let gapped = observe(sender, &chunks);
                        assert_consistent(&gapped, &whole, &format!("{context}, gap {gap}"));
                    }
                    // Joined at the cut.
                    let joined = observe_with(FrameReader::lost(sender), &[chunk(tail, 0, true)]);
                    assert_consistent(&joined, &whole, &format!("{context}, joined"));
                }
            }
        }
    }
}
