//! The static Huffman code of HPACK (RFC 7541, Appendix B), decoded four bits at a time.
//!
//! The code is canonical: within one length, codes are consecutive in symbol order, and each
//! length starts where the previous one ended, shifted left. So the 257 code lengths are all
//! the data needed; codes, the code tree and the decoding table are derived from them at compile
//! time. Decoding walks a state machine whose states are the tree's 256 inner nodes: one table
//! lookup per nibble, which can complete at most one symbol since the shortest code has five bits.

use crate::{Error, Result};

/// Code length in bits of each byte value, then of EOS (index 256).
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

const EOS: u16 = 256;
const MAX_CODE_LENGTH: u8 = 30;

/// The code of each symbol, right-aligned, from the canonical assignment.
const CODES: [u32; 257] = canonical_codes();

const fn canonical_codes() -> [u32; 257] {
    let mut codes = [0u32; 257];
    let mut next = 0u32;
    let mut length = 1u8;
    while length <= MAX_CODE_LENGTH {
        let mut symbol = 0;
        while symbol < 257 {
            if CODE_LENGTHS[symbol] == length {
                codes[symbol] = next;
                next += 1;
            }
            symbol += 1;
        }
        next <<= 1;
        length += 1;
    }
    codes
}

/// A child in the code tree: an inner node's number, or `LEAF | symbol`.
const LEAF: u16 = 0x8000;

/// The code tree: for each inner node (0 is the root), its children for bit 0 and bit 1.
/// A complete prefix code over 257 symbols has exactly 256 inner nodes, so a node fits a `u8`.
const TREE: [[u16; 2]; 256] = code_tree();

const fn code_tree() -> [[u16; 2]; 256] {
    // Zero means "no child yet": the root is never anyone's child.
    let mut tree = [[0u16; 2]; 256];
    let mut nodes = 1u16;
    let mut symbol = 0;
    while symbol < 257 {
        let length = CODE_LENGTHS[symbol];
        let code = CODES[symbol];
        let mut node = 0usize;
        let mut bit = length;
        while bit > 1 {
            bit -= 1;
            let branch = ((code >> bit) & 1) as usize;
            if tree[node][branch] == 0 {
                tree[node][branch] = nodes;
                nodes += 1;
            }
            node = tree[node][branch] as usize;
        }
        tree[node][(code & 1) as usize] = LEAF | symbol as u16;
        symbol += 1;
    }
    tree
}

/// A transition emits `symbol`.
const EMIT: u8 = 1;
/// The bits walked reach EOS: the string is invalid (RFC 7541, section 5.2).
const FAIL: u8 = 2;
/// After the transition the bits since the last symbol are valid padding (fewer than eight, all
/// ones, i.e. a prefix of EOS), so the string may end here.
const ACCEPT: u8 = 4;

#[derive(Clone, Copy)]
struct Transition {
    next: u8,
    symbol: u8,
    flags: u8,
}

/// For each state (inner node) and each nibble, where the four bits lead.
static DECODE: [[Transition; 16]; 256] = decode_table();

/// Inner nodes reached from the root by fewer than eight one bits: the valid end states.
const fn accepting() -> [bool; 256] {
    let mut accept = [false; 256];
    accept[0] = true;
    let mut node = 0usize;
    let mut depth = 1;
    while depth < 8 {
        let child = TREE[node][1];
        if child & LEAF != 0 {
            break;
        }
        node = child as usize;
        accept[node] = true;
        depth += 1;
    }
    accept
}

const fn decode_table() -> [[Transition; 16]; 256] {
    let accept = accepting();
    let mut table = [[Transition {
        next: 0,
        symbol: 0,
        flags: 0,
    }; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0u8;
        while nibble < 16 {
            let mut node = state;
            let mut symbol = 0u8;
            let mut flags = 0u8;
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                let child = TREE[node][((nibble >> bit) & 1) as usize];
                if child & LEAF == 0 {
                    node = child as usize;
                } else if child == LEAF | EOS {
                    flags |= FAIL;
                    node = 0;
                } else {
                    symbol = (child & 0xff) as u8;
                    flags |= EMIT;
                    node = 0;
                }
            }
            if accept[node] {
                flags |= ACCEPT;
            }
            table[state][nibble as usize] = Transition {
                next: node as u8,
                symbol,
                flags,
            };
            nibble += 1;
        }
        state += 1;
    }
    table
}

/// Appends the decoding of the Huffman string `src` to `dst`. Invalid strings (EOS inside,
/// padding longer than seven bits or not all ones) are an error; `dst` may then hold a garbled
/// decoding.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<()> {
    // At most one symbol per five bits: room for all of them up front, then the loop writes
    // without growing and without branching on what each nibble did.
    let start = dst.len();
    dst.resize(start + src.len() * 8 / 5 + 1, 0);
    let out = &mut dst[start..];
    let mut len = 0;
    let mut state = 0usize;
    let mut seen = 0u8;
    let mut last = ACCEPT;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = DECODE[state][usize::from(nibble)];
            if let Some(slot) = out.get_mut(len) {
                *slot = step.symbol;
            }
            len += usize::from(step.flags & EMIT);
            seen |= step.flags;
            state = usize::from(step.next);
            last = step.flags;
        }
    }
    dst.truncate(start + len);
    // A failing transition leads back to the root, so decoding on past it is harmless.
    if seen & FAIL != 0 {
        return Err(Error::Hpack("EOS inside a Huffman string"));
    }
    if last & ACCEPT == 0 {
        return Err(Error::Hpack("invalid Huffman padding"));
    }
    Ok(())
}

/// Test-only encoder, shared by the HPACK tests.
#[cfg(test)]
pub(crate) fn encode(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bits = 0u64;
    let mut pending = 0u32;
    for &byte in src {
        let length = u32::from(CODE_LENGTHS[usize::from(byte)]);
        bits = (bits << length) | u64::from(CODES[usize::from(byte)]);
        pending += length;
        while pending >= 8 {
            pending -= 8;
            out.push((bits >> pending) as u8);
        }
    }
    if pending > 0 {
        // Pad with the most significant bits of EOS, all ones.
        out.push(((bits << (8 - pending)) as u8) | (0xff >> pending));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(src: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    #[test]
    fn canonical_codes_match_the_rfc_table() {
        // Spot checks against RFC 7541 Appendix B, across lengths and the table's ends.
        for (symbol, code, length) in [
            (0usize, 0x1ff8u32, 13u8),
            (1, 0x7fffd8, 23),
            (10, 0x3ffffffc, 30),
            (b' ' as usize, 0x14, 6),
            (b'0' as usize, 0x0, 5),
            (b'a' as usize, 0x3, 5),
            (b'z' as usize, 0x7b, 7),
            (b'{' as usize, 0x7ffe, 15),
            (b'<' as usize, 0x7ffc, 15),
            (0x80, 0xfffe6, 20),
            (0xff, 0x3ffffee, 26),
            (256, 0x3fffffff, 30),
        ] {
            assert_eq!(CODE_LENGTHS[symbol], length, "length of {symbol}");
            assert_eq!(CODES[symbol], code, "code of {symbol}");
        }
        // A complete prefix code: the Kraft sum is exactly one.
        let kraft: u64 = CODE_LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
    }

    #[test]
    fn rfc_examples_decode() {
        // RFC 7541 C.4.1, C.4.2, C.6.1 Huffman strings.
        let cases: &[(&str, &str)] = &[
            ("f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"),
            ("a8eb10649cbf", "no-cache"),
            ("25a849e95ba97d7f", "custom-key"),
            ("25a849e95bb8e8b4bf", "custom-value"),
            ("6402", "302"),
            ("aec3771a4b", "private"),
            (
                "d07abe941054d444a8200595040b8166e082a62d1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29ad171863c78f0b97c8e9ae82ae43d3",
                "https://www.example.com",
            ),
        ];
        for &(hex, text) in cases {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            assert_eq!(decoded(&bytes).unwrap(), text.as_bytes(), "{hex}");
            assert_eq!(encode(text.as_bytes()), bytes, "{text}");
        }
    }

    #[test]
    fn every_symbol_round_trips() {
        for byte in 0..=255u8 {
            for text in [vec![byte], vec![byte, b'a', byte], vec![byte; 7]] {
                assert_eq!(decoded(&encode(&text)).unwrap(), text, "{byte:#x}");
            }
        }
        let all: Vec<u8> = (0..=255).chain((0..=255).rev()).collect();
        assert_eq!(decoded(&encode(&all)).unwrap(), all);
        assert_eq!(decoded(&[]).unwrap(), b"");
    }

    #[test]
    fn invalid_padding_and_eos_are_rejected() {
        // "a" is 00011: three bits of padding, which must be ones.
        assert_eq!(decoded(&[0b0001_1111]).unwrap(), b"a");
        for bad in [
            &[0b0001_1000][..],              // zero padding
            &[0b0001_1011],                  // padding with a zero in it
            &[0b0001_1111, 0xff],            // eleven bits of padding
            &[0xff],                         // a whole byte of padding, no symbol
            &[0xff, 0xff, 0xff, 0xfc],       // EOS (30 ones), then two zero bits
            &[0x1f, 0xff, 0xff, 0xff, 0xff], // "a", then EOS and five bits more
            &[0x00, 0x3f, 0xff, 0xff, 0xff], // "00" then EOS
        ] {
            assert!(decoded(bad).is_err(), "{bad:02x?}");
        }
        // Seven bits of padding are the most allowed: "0" and "0" (00000 each), ":" (1011100),
        // then seven ones.
        assert_eq!(encode(b"00:"), [0x00, 0x2e, 0x7f]);
        assert_eq!(decoded(&[0x00, 0x2e, 0x7f]).unwrap(), b"00:");
        assert!(decoded(&[0x00, 0x2e, 0x7f, 0xff]).is_err());
    }
}
