#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""A small UDIF (.dmg) writer for the tests: builds an image from a raw disk file with the chunk
types asked for, so that the tests can check that vdimg reads every kind back as the source.

  mkdmg.py [options] SOURCE OUT

Chunks of --chunk sectors are cut from the source; the source is split into --tables blkx tables.
An all-zero chunk is written as a zero-fill chunk (or ignore, alternating, with --ignore); every
other chunk gets the next type of --types (raw, zlib, adc, bzip2, lzfse, lzma) in turn;
LZMA chunks are .xz streams (CRC-32 check), or .lzma ones with --lzma-alone. CRC-32 checksums
(data fork, each table over its decoded data without ignored chunks, and the master checksum over
the tables' checksums) are written unless --no-crc. A comment chunk and the terminator end each
table.
"""
import argparse
import bz2
import lzma
import os
import plistlib
import shutil
import struct
import subprocess
import sys
import zlib

TYPES = {"zero": 0, "raw": 1, "ignore": 2, "adc": 0x80000004, "zlib": 0x80000005,
         "bzip2": 0x80000006, "lzfse": 0x80000007, "lzma": 0x80000008}
COMMENT, END = 0x7FFFFFFE, 0xFFFFFFFF


def adc_encode(data):
    """Greedy ADC: copies found through a table of the last position of each 3-byte string."""
    out = bytearray()
    lit = bytearray()
    last = {}
    i, n = 0, len(data)

    def flush():
        for k in range(0, len(lit), 128):
            part = lit[k:k + 128]
            out.append(0x80 | (len(part) - 1))
            out.extend(part)
        lit.clear()

    while i < n:
        best_len, best_dist = 0, 0
        if i + 3 <= n:
            key = bytes(data[i:i + 3])
            j = last.get(key)
            if j is not None and i - j - 1 < 65536:
                length = 0
                while i + length < n and length < 67 and data[j + length] == data[i + length]:
                    length += 1
                best_len, best_dist = length, i - j - 1
            last[key] = i
        if best_len >= 3 and best_dist < 1024 and best_len <= 18:
            flush()
            out.append(((best_len - 3) << 2) | (best_dist >> 8))
            out.append(best_dist & 0xFF)
            i += best_len
        elif best_len >= 4:
            flush()
            out.append(0x40 | (best_len - 4))
            out.extend(struct.pack(">H", best_dist))
            i += best_len
        else:
            lit.append(data[i])
            i += 1
    flush()
    return bytes(out)


BZ_LEVEL = 9
LZMA_ALONE = False


def lzfse_encode(data):
    """The reference encoder's command line tool (github.com/lzfse/lzfse; not packaged in
    Debian): $LZFSE, or lzfse on the PATH. Exit status 3 without one."""
    tool = os.environ.get("LZFSE") or shutil.which("lzfse")
    if not tool:
        sys.stderr.write("mkdmg.py: no LZFSE encoder (set LZFSE to the lzfse tool)\n")
        sys.exit(3)
    return subprocess.run([tool, "-encode"], input=data, stdout=subprocess.PIPE,
                          check=True).stdout


def compress(kind, data):
    if kind == "raw":
        return data
    if kind == "zlib":
        return zlib.compress(data, 9)
    if kind == "adc":
        return adc_encode(data)
    if kind == "bzip2":
        return bz2.compress(data, BZ_LEVEL)
    if kind == "lzma":
        if LZMA_ALONE:
            return lzma.compress(data, format=lzma.FORMAT_ALONE)
        return lzma.compress(data, check=lzma.CHECK_CRC32)
    if kind == "lzfse":
        return lzfse_encode(data)
    raise ValueError(kind)


def corrupt_bzip2(how, stored, piece):
    """bztrunc: cut short; bzcrc: the block CRC flipped; bzhuff: the first table's code lengths
    out of range; bzlong: a stream of the chunk's data and one sector more (too much output)"""
    if how == "bztrunc":
        return stored[:len(stored) // 2]
    if how == "bzcrc":
        return stored[:10] + bytes([stored[10] ^ 0x10]) + stored[11:]
    if how == "bzhuff":
        # after the 4-byte header, 48-bit magic, 32-bit CRC, 1+24 bits, the map: find the
        # 5-bit start length of group 0 by decoding the bits the way the decoder does
        bits = "".join(format(b, "08b") for b in stored)
        pos = 32 + 48 + 32 + 1 + 24
        used = int(bits[pos:pos + 16], 2)
        pos += 16 + 16 * bin(used).count("1")
        ngroups = int(bits[pos:pos + 3], 2)
        nsel = int(bits[pos + 3:pos + 18], 2)
        pos += 18
        for _ in range(nsel):
            while bits[pos] == "1":
                pos += 1
            pos += 1
        # start length 0 is out of range
        bits = bits[:pos] + "00000" + bits[pos + 5:]
        assert ngroups >= 2
        return int(bits, 2).to_bytes(len(stored), "big")
    if how == "bzlong":
        return bz2.compress(piece + b"x" * 512)
    raise ValueError(how)


def checksum(crc):
    return struct.pack(">II", 2, 32) + struct.pack(">I", crc) + bytes(124)


def no_checksum():
    return bytes(136)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("--types", default="raw,zlib,adc")
    ap.add_argument("--chunk", type=int, default=64, help="sectors per chunk")
    ap.add_argument("--tables", type=int, default=2)
    ap.add_argument("--ignore", action="store_true", help="zero chunks alternate with ignore")
    ap.add_argument("--no-crc", action="store_true")
    ap.add_argument("--lead", type=int, default=0, help="bytes before the data fork")
    ap.add_argument("--corrupt", default="",
                    help="offset, overlap, gap, count, b64, nomish, zdata, adcdist, master, "
                         "version, bztrunc, bzcrc, bzhuff, bzlong, lzdata")
    ap.add_argument("--rsrc", action="store_true",
                    help="the tables in a binary resource fork, no property list")
    ap.add_argument("--rel", action="store_true",
                    help="chunk offsets relative to a per-table data offset (hdiutil: absolute)")
    ap.add_argument("--bz-level", type=int, default=9,
                    help="bzip2 block size in 100k (1: several blocks per 1 MiB chunk)")
    ap.add_argument("--lzma-alone", action="store_true",
                    help="LZMA chunks as .lzma (alone) streams instead of .xz ones")
    a = ap.parse_args()
    global BZ_LEVEL, LZMA_ALONE
    BZ_LEVEL = a.bz_level
    LZMA_ALONE = a.lzma_alone

    src = open(a.source, "rb").read()
    assert len(src) % 512 == 0 and src
    nsec = len(src) // 512
    kinds = a.types.split(",")
    fork = bytearray(b"\xa5" * a.lead)
    fork_start = a.lead
    per_table = -(-nsec // a.tables)
    tables = []
    k = 0
    zero_toggle = 0
    done = {}
    for t in range(a.tables):
        first = t * per_table
        count = min(per_table, nsec - first)
        if count <= 0:
            break
        data_offset = len(fork) - fork_start if a.rel else 0
        chunks = []
        crc = 0
        s = 0
        while s < count:
            c = min(a.chunk, count - s)
            piece = src[(first + s) * 512:(first + s + c) * 512]
            if piece.count(0) == len(piece):
                kind = "zero"
                if a.ignore and zero_toggle % 2:
                    kind = "ignore"
                zero_toggle += 1
                stored = b""
            else:
                kind = kinds[k % len(kinds)]
                k += 1
                stored = compress(kind, piece)
            if kind != "ignore":
                crc = zlib.crc32(piece, crc)
            if a.corrupt == "zdata" and kind == "zlib" and not done.get("zdata"):
                stored = stored[:8] + bytes(b ^ 0x5A for b in stored[8:40]) + stored[40:]
                done["zdata"] = 1
            if a.corrupt.startswith("bz") and kind == "bzip2" and not done.get("bz"):
                stored = corrupt_bzip2(a.corrupt, stored, piece)
                done["bz"] = 1
            if a.corrupt == "lzdata" and kind == "lzma" and not done.get("lzdata"):
                mid = len(stored) // 2
                stored = stored[:mid] + bytes(b ^ 0x21 for b in stored[mid:mid + 8]) + \
                    stored[mid + 8:]
                done["lzdata"] = 1
            if a.corrupt == "adcdist" and kind == "adc" and not done.get("adcdist"):
                stored = b"\x40\x10\x00" + stored  # a copy before any output
                done["adcdist"] = 1
            off = len(fork) - fork_start - data_offset
            fork.extend(stored)
            if a.corrupt == "offset" and stored and not done.get("offset"):
                off += 1 << 40
                done["offset"] = 1
            rel = s
            if a.corrupt == "overlap" and t == 0 and len(chunks) == 1:
                rel = s - 1
            if a.corrupt == "gap" and t == 0 and len(chunks) == 1:
                rel = s + 1
            chunks.append(struct.pack(">IIQQQQ", TYPES[kind], 0, rel, c,
                                      off if stored else 0, len(stored)))
            s += c
        chunks.append(struct.pack(">IIQQQQ", COMMENT, 0, count, 0, 0, 0))
        chunks.append(struct.pack(">IIQQQQ", END, 0, count, 0, 0, 0))
        mish = b"mish" + struct.pack(">IQQQII", 1, first, count, data_offset, 0, 0) + bytes(24)
        mish += no_checksum() if a.no_crc else checksum(crc)
        mish += struct.pack(">I", len(chunks)) + b"".join(chunks)
        if a.corrupt == "nomish" and t == 0:
            mish = b"MISH" + mish[4:]
        tables.append((mish, crc, first, count))

    master = 0
    for _, crc, _, _ in tables:
        master = zlib.crc32(struct.pack(">I", crc), master)
    blkx = [{"Attributes": "0x0050", "CFName": "part %d" % i, "Data": m, "ID": str(i - 1),
             "Name": "part %d : Apple_HFS" % i} for i, (m, _, _, _) in enumerate(tables)]
    plist = plistlib.dumps({"resource-fork": {"blkx": blkx, "plst": [{"Data": bytes(64)}]}})
    if a.corrupt == "b64":
        at = plist.index(b"<data>") + 20
        plist = plist[:at] + b"!" + plist[at + 1:]
    if a.corrupt == "master":
        master ^= 1
    data_len = len(fork) - fork_start
    fork_crc = zlib.crc32(bytes(fork[fork_start:]))
    xml_off = len(fork)
    rsrc_off = rsrc_len = 0
    if a.rsrc:
        # header (data offset, map offset, data length, map length), the data area (length-prefixed
        # resources, a non-mish one among them), an empty map
        data = b"".join(struct.pack(">I", len(m)) + m for m, _, _, _ in tables)
        data += struct.pack(">I", 64) + b"plst" + bytes(60)
        plist = struct.pack(">IIII", 256, 256 + len(data), len(data), 32) + bytes(240) + data
        plist += bytes(32)
        rsrc_off, rsrc_len = xml_off, len(plist)
        xml_off = 0
    koly = b"koly" + struct.pack(">III", 3 if a.corrupt == "version" else 4, 512, 1)
    koly += struct.pack(">QQQQQ", 0, fork_start, data_len, rsrc_off, rsrc_len)
    koly += struct.pack(">II", 1, 1) + bytes(16)
    koly += no_checksum() if a.no_crc else checksum(fork_crc)
    koly += struct.pack(">QQ", xml_off, 0 if a.rsrc else len(plist)) + bytes(120)
    koly += no_checksum() if a.no_crc else checksum(master)
    koly += struct.pack(">IQ", 1, nsec + (a.corrupt == "count")) + bytes(12)
    assert len(koly) == 512
    with open(a.out, "wb") as f:
        f.write(fork)
        f.write(plist)
        f.write(koly)


if __name__ == "__main__":
    main()
