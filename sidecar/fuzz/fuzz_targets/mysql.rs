//! Fuzzes the MySQL/MariaDB parser through the connection layer, with inputs steered towards
//! the protocol's packets: no input may panic, and the connection layer stays within its limits.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

const FRAGMENTS: &[&[u8]] = &[
    b"",
    b"\x2e\0\0\0\x0a10.11.6-MariaDB\0\x01\0\0\0abcdefgh\0\x08\x82\x08\x02\0\x0f\x80\x15\0\0\0\0\0\0\0\0\0\0ijklmnopqrst\0",
    b"\x30\0\0\x01\x08\x82\x08\0\0\0\0\x01\x21\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0test\0\x00shop\0",
    b"\x07\0\0\x02\0\0\0\x02\0\0\0",
    b"\x09\0\0\0\x03SELECT 1",
    b"\x0d\0\0\0\x16SELECT ? + 1",
    b"\x0a\0\0\0\x17\x01\0\0\0\0\x01\0\0\0",
    b"\x05\0\0\0\x19\x01\0\0\0",
    b"\x06\0\0\0\x02other",
    b"\x01\0\0\x01\x01",
    b"\x05\0\0\x03\xfe\0\0\x02\0",
    b"\x0c\0\0\x01\0\x01\0\0\0\x01\0\x01\0\0\0\0",
    b"\x09\0\0\x01\xff\x7a\x04#42S02",
    b"\x02\0\0\x04\x011",
];

fuzz_target!(|ops: Vec<common::Op>| common::drive(&ops, FRAGMENTS));
