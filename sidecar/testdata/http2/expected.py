#!/usr/bin/env python3
"""Writes NAME.c2s.txt and NAME.s2c.txt for each capture here: its frames and the header fields of
each header block, decoded by python-hyper's `hpack` (pip install hpack==4.2.0), an HPACK decoder
independent of the one under test. The Rust golden tests print the same listing and compare.

    expected.py   # in this directory, after recording
"""
import glob

from hpack import Decoder
from hpack.struct import NeverIndexedHeaderTuple

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TYPES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
         "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]
PADDED, PRIORITY, END_HEADERS = 0x8, 0x20, 0x4


def show(value):
    if all(0x20 <= c < 0x7f for c in value):
        return value.decode()
    return "hex:" + value.hex()


def listing(data):
    lines = []
    pos = 0
    if data.startswith(PREFACE):
        lines.append("PREFACE")
        pos = len(PREFACE)
    decoder = Decoder()
    block = b""
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        stream = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        payload = data[pos + 9:pos + 9 + length]
        assert len(payload) == length, "capture ends inside a frame"
        name = TYPES[kind] if kind < len(TYPES) else f"UNKNOWN_{kind:#04x}"
        lines.append(f"{name} length={length} flags={flags:#04x} stream={stream}")
        if kind in (1, 5, 9):
            fragment = payload
            if kind in (1, 5) and flags & PADDED:
                fragment = fragment[1:len(fragment) - payload[0]]
            if kind == 1 and flags & PRIORITY:
                fragment = fragment[5:]
            if kind == 5:
                fragment = fragment[4:]
            block += fragment
            if flags & END_HEADERS:
                for field in decoder.decode(block, raw=True):
                    mark = " [never-indexed]" if isinstance(field, NeverIndexedHeaderTuple) else ""
                    lines.append(f"  {show(field[0])}: {show(field[1])}{mark}")
                block = b""
        pos += 9 + length
    assert pos == len(data), "trailing bytes"
    return "\n".join(lines) + "\n"


for path in sorted(glob.glob("*.c2s") + glob.glob("*.s2c")):
    with open(path, "rb") as f:
        text = listing(f.read())
    with open(path + ".txt", "w") as f:
        f.write(text)
    print(path, text.count("\n"), "lines")
