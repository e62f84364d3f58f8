#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Write a small seSparse VMDK (ESXi 6.5+ snapshot format) for the host tests.

qemu-img cannot create seSparse images but reads them, so the tests make them here and use
`qemu-img convert -O raw` as the oracle. The layout follows what qemu's reader checks (the
format is not documented by VMware): a descriptor file DESC (createType "seSparse", one SESPARSE
extent) and the extent DESC-sesparse.vmdk: constant header (sector 0), volatile header, journal
header and journal (zeros), grain directory (u64: 0x10000000 << 32 | table index), grain-table
area (tables of 4096 u64 entries), grain area (4 KiB grains). Grain table entries: type 0
unallocated, 1 unmapped and 2 zeroed (read as zeros), 3 allocated with the grain index split
as bits 48-59 (low 12 bits) and 0-47 (the rest). Grains and tables are placed out of order, at
indexes beyond 4096, so both halves of the index encoding are used.

--room sizes the grain-table and grain areas for every table and grain the disk can have (room to
write); --empty allocates nothing (a fresh snapshot child).

usage: mksesparse.py DESC SIZE_BYTES [--seed N] [--parent HINT --parent-cid HEX] [--room] [--empty]
                     [--corrupt magic|gde|gte|grain|replay|bitmap|overlap]
"""
import argparse
import os
import random
import struct

SECTOR = 512
GRAIN = 8 * SECTOR
GTES = 4096


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("desc")
    ap.add_argument("size", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--parent")
    ap.add_argument("--parent-cid", default="ffffffff")
    ap.add_argument("--corrupt")
    ap.add_argument("--room", action="store_true")
    ap.add_argument("--empty", action="store_true")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    cap = a.size // SECTOR
    grains = (cap + 7) // 8
    nr_gts = (grains + GTES - 1) // GTES

    # what each grain is: None (unallocated), "zero", "unmapped" or data bytes
    kinds = []
    for g in range(grains):
        r = 0 if a.empty else rnd.random()
        if r < 0.45:
            kinds.append(None)
        elif r < 0.55:
            kinds.append("zero")
        elif r < 0.6:
            kinds.append("unmapped")
        else:
            kinds.append(bytes([rnd.randrange(1, 256)]) * 2048 + rnd.randbytes(2048))
    used = [g for g in range(grains) if isinstance(kinds[g], bytes)]
    slots = list(range(4090, 4090 + len(used) + 20))
    rnd.shuffle(slots)
    idx_of = dict(zip(used, slots))
    tables = [t for t in range(nr_gts) if any(k is not None for k in kinds[t * GTES:(t + 1) * GTES])]
    tslots = list(range(len(tables)))
    rnd.shuffle(tslots)
    tidx = dict(zip(tables, tslots))

    vol_off, jh_off, j_off, j_size = 1, 2, 3, 8
    gd_off = 16
    gd_size = max(1, (nr_gts * 8 + SECTOR - 1) // SECTOR)
    gts_off = (gd_off + gd_size + 7) // 8 * 8
    gts_size = max(1, len(tables)) * 64
    grains_off = gts_off + gts_size
    grains_size = (max(slots) + 1) * 8 if slots else 8
    if a.room:
        gts_size = nr_gts * 64
        grains_off = gts_off + gts_size
        grains_size = ((max(slots) + 1) if slots else 0) * 8 + grains * 8
    bitmap = (1, 1) if a.corrupt == "bitmap" else (0, 0)
    if a.corrupt == "overlap":
        grains_off = gts_off

    if a.corrupt == "grain" and used:
        idx_of[used[0]] = grains_size // 8 + 3

    hdr = struct.pack("<26Q", 0xcafebabe, 0x0000000200000001, cap, 8, 64, 0, 0, 0, 0, 0,
                      vol_off, 1, jh_off, 1, j_off, j_size, gd_off, gd_size, gts_off, gts_size,
                      bitmap[0], bitmap[1], 0, 0, grains_off, grains_size)
    if a.corrupt == "magic":
        hdr = struct.pack("<Q", 0xcafebabf) + hdr[8:]
    hdr += bytes(SECTOR - len(hdr))
    vol = struct.pack("<4Q", 0xcafecafe, 0, 1, 1 if a.corrupt == "replay" else 0)
    vol += bytes(SECTOR - len(vol))

    ext = os.path.splitext(a.desc)[0] + "-sesparse.vmdk"
    with open(ext, "wb") as f:
        f.write(hdr)
        f.write(vol)
        gd = bytearray(gd_size * SECTOR)
        for t in tables:
            e = 0x1000000000000000 | tidx[t]
            if a.corrupt == "gde" and t == tables[0]:
                e = 0x2000000000000000 | tidx[t]
            struct.pack_into("<Q", gd, t * 8, e)
        f.seek(gd_off * SECTOR)
        f.write(gd)
        for t in tables:
            gt = bytearray(GTES * 8)
            for i in range(GTES):
                g = t * GTES + i
                if g >= grains or kinds[g] is None:
                    continue
                if kinds[g] == "zero":
                    e = 0x2000000000000000
                elif kinds[g] == "unmapped":
                    e = 0x1000000000000000
                else:
                    idx = idx_of[g]
                    e = 0x3000000000000000 | ((idx & 0xfff) << 48) | (idx >> 12)
                if a.corrupt == "gte" and g == used[0]:
                    e = 0x5000000000000000
                struct.pack_into("<Q", gt, i * 8, e)
            f.seek((gts_off + tidx[t] * 64) * SECTOR)
            f.write(gt)
        for g in used:
            f.seek((grains_off + idx_of[g] * 8) * SECTOR)
            f.write(kinds[g])
        f.truncate((grains_off + grains_size) * SECTOR)

    cid = rnd.randrange(1, 0xfffffffe)
    lines = ["# Disk DescriptorFile", "version=1", "CID=%08x" % cid,
             "parentCID=%s" % a.parent_cid, 'createType="seSparse"']
    if a.parent:
        lines.append('parentFileNameHint="%s"' % a.parent)
    lines += ["", "# Extent description",
              'RW %d SESPARSE "%s"' % (cap, os.path.basename(ext)), "",
              "# The Disk Data Base", "#DDB", "",
              'ddb.adapterType = "lsilogic"', 'ddb.virtualHWVersion = "14"',
              'ddb.geometry.cylinders = "%d"' % max(1, cap // (255 * 63)),
              'ddb.geometry.heads = "255"', 'ddb.geometry.sectors = "63"', ""]
    with open(a.desc, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
