//! Fuzzes the PostgreSQL parser through the connection layer, with inputs steered towards the
//! protocol's messages: no input may panic, and the connection layer stays within its limits.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

const FRAGMENTS: &[&[u8]] = &[
    b"",
    b"\0\0\0\x21\0\x03\0\0user\0u\0database\0shop\0\0",
    b"\0\0\0\x08\x04\xd2\x16\x2f",
    b"N",
    b"Q\0\0\0\x0dSELECT 1\0",
    b"Q\0\0\0\x1aSELECT 1; SELECT 'x;y'\0",
    b"P\0\0\0\x16s1\0SELECT $1\0\0\0",
    b"B\0\0\0\x0e\0s1\0\0\0\0\0\0\0E\0\0\0\x09\0\0\0\0\0S\0\0\0\x04",
    b"C\0\0\0\x06Ss1\0",
    b"C\0\0\0\x0dSELECT 1\0Z\0\0\0\x05I",
    b"E\0\0\0\x11SERROR\0C42P01\0\0",
    b"1\0\0\0\x042\0\0\0\x04",
    b"G\0\0\0\x07\0\0\0d\0\0\0\x05xc\0\0\0\x04",
    b"X\0\0\0\x04",
];

fuzz_target!(|ops: Vec<common::Op>| common::drive(&ops, FRAGMENTS));
