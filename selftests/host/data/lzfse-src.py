#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Write the 256 KiB source disk of the committed LZFSE test data (selftests/host/data/lzfse-*):
zero, text and (1 KiB) pseudo-random regions of 8 KiB from a fixed linear congruential generator, so
that the bytes never depend on the Python version.  lzfse-src.py OUT"""
import sys

x = 12345


def rnd():
    global x
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x >> 8


out = bytearray()
for i in range(32):
    kind = i % 4
    if kind == 0:
        out += bytes(8192)
    elif kind == 3:
        out += bytes(rnd() & 0xFF for _ in range(1024)) + b"\xa5" * 7168
    else:
        text = bytearray()
        while len(text) < 8192:
            text += b"line %d of region %d: value %d\n" % (len(text), i, rnd() % (1000 * kind))
        out += text[:8192]
open(sys.argv[1], "wb").write(out)
