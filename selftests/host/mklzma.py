#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""LZMA test streams for test_dmg: each case is DIR/lz-N.raw (the data) and DIR/lz-N.z (it
compressed by a reference encoder: Python's lzma module, i.e. liblzma, or the xz tool), and a
line "N expect tag" on stdout, where expect is 0 (decodes to the data) or "unsupported".

  mklzma.py DIR
"""
import lzma
import os
import random
import subprocess
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
random.seed(11)
text = b"".join(b"row %d value %d\n" % (i, random.randrange(1000)) for i in range(6000))
rnd = random.randbytes(40000)
block = random.randbytes(3000)
longm = b"".join(block[:2000 + i * 37] + bytes([i]) for i in range(20))
data = {"text": text, "random": rnd, "zeros": bytes(100000), "long-matches": longm,
        "one-byte": b"Q", "empty": b""}
n = 0


def case(tag, raw, z, expect="0"):
    global n
    open(os.path.join(out, "lz-%d.raw" % n), "wb").write(raw)
    open(os.path.join(out, "lz-%d.z" % n), "wb").write(z)
    print(n, expect, tag)
    n += 1


for name, d in data.items():
    case("alone default, " + name, d, lzma.compress(d, format=lzma.FORMAT_ALONE))
    case("xz default (CRC-64), " + name, d, lzma.compress(d))
    case("xz CRC-32, " + name, d, lzma.compress(d, check=lzma.CHECK_CRC32))
    case("xz no check, " + name, d, lzma.compress(d, check=lzma.CHECK_NONE))
    case("xz SHA-256, " + name, d, lzma.compress(d, check=lzma.CHECK_SHA256))
    for tool, fmt in (("xz --format=lzma", "lzma"), ("xz --block-size=7000", "xz")):
        args = ["xz", "-c", "--format=" + fmt] + (["--block-size=7000"] if fmt == "xz" else [])
        z = subprocess.run(args, input=d, stdout=subprocess.PIPE, check=True).stdout
        case(tool + ", " + name, d, z)

d = text + rnd[:5000] + longm
for preset in list(range(10)) + [9 | lzma.PRESET_EXTREME]:
    case("xz preset %d" % preset, d, lzma.compress(d, preset=preset))
    case("alone preset %d" % preset, d, lzma.compress(d, format=lzma.FORMAT_ALONE, preset=preset))
for lc, lp, pb in ((0, 0, 0), (4, 0, 2), (0, 4, 4), (2, 2, 1), (1, 3, 3), (3, 1, 0), (0, 2, 4)):
    for dict_size in (4096, 1 << 16, 1 << 23):
        f = {"lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}
        case("alone lc=%d lp=%d pb=%d dict %d" % (lc, lp, pb, dict_size), d,
             lzma.compress(d, format=lzma.FORMAT_ALONE, filters=[dict(f, id=lzma.FILTER_LZMA1)]))
        case("xz lc=%d lp=%d pb=%d dict %d" % (lc, lp, pb, dict_size), d,
             lzma.compress(d, filters=[dict(f, id=lzma.FILTER_LZMA2)]))
        # raw LZMA1 with the .lzma header written here, the size known (the marker stays)
        raw = lzma.compress(d, format=lzma.FORMAT_RAW, filters=[dict(f, id=lzma.FILTER_LZMA1)])
        hdr = bytes([(pb * 5 + lp) * 9 + lc]) + dict_size.to_bytes(4, "little")
        case("raw+header, known size, lc=%d lp=%d pb=%d dict %d" % (lc, lp, pb, dict_size), d,
             hdr + len(d).to_bytes(8, "little") + raw)
# stored LZMA2 chunks (incompressible data) and two concatenated .xz streams
case("xz incompressible (stored LZMA2 chunks)", rnd, lzma.compress(rnd, preset=0))
case("two concatenated xz streams", text + rnd, lzma.compress(text) + lzma.compress(rnd))
# lc + lp above 4 is refused by name
# (liblzma does not write them: a stream with its properties byte changed to lc=4 lp=4 pb=2)
case("alone lc=4 lp=4", text, bytes([(2 * 5 + 4) * 9 + 4]) +
     lzma.compress(text, format=lzma.FORMAT_ALONE)[1:], "unsupported")
case("xz with a delta filter", text, lzma.compress(text, filters=[
     {"id": lzma.FILTER_DELTA, "dist": 4}, {"id": lzma.FILTER_LZMA2}]), "unsupported")
