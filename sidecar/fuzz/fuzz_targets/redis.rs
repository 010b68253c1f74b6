//! Fuzzes the Redis parser through the connection layer, with inputs steered towards RESP2 and
//! RESP3 values: no input may panic, and the connection layer stays within its limits.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

const FRAGMENTS: &[&[u8]] = &[
    b"",
    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
    b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n",
    b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n",
    b"PING\r\n",
    b"+OK\r\n",
    b"-WRONGTYPE Operation\r\n",
    b"$5\r\nhello\r\n",
    b"$-1\r\n",
    b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
    b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n",
    b"%1\r\n+a\r\n~1\r\n:1\r\n",
    b"|1\r\n+ttl\r\n:5\r\n",
    b"!5\r\nERR x\r\n",
];

fuzz_target!(|ops: Vec<common::Op>| common::drive(&ops, FRAGMENTS));
