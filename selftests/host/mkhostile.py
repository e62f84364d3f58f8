#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""mkhostile.py DIR: hand-made malformed images for the kernel's hostile-input test (issue 16,
selftests/vm/tests/360-hostile-images.sh), written as DIR/FORMAT/NAME.

Each starts as an image qemu-img makes and qemu-io fills (data in the first two blocks or
clusters), then one field is broken the way a damaged or hostile file breaks it: a table entry
pointing past the end of the file, at the header or at metadata, two entries sharing one cluster,
a table or size field far too large, zero or not a power of two. Checksums that guard the field
(VHD's header and footer) are recomputed, so the broken value itself reaches the driver.
Formats: qcow2, vhd, vdi, qed, vhdx (BAT entries; its region tables have CRC-32C), vmdk
(monolithicSparse) and parallels. Needs qemu-img and qemu-io.
"""
import os
import struct
import subprocess
import sys

MiB = 1 << 20


def qemu(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def base(fmt, opts, step):
    """a 64 MiB image of qemu-img's @fmt with data at 0 and at @step (the second block)"""
    path = os.path.join(OUT, ".base")
    if os.path.exists(path):
        os.unlink(path)
    qemu("qemu-img", "create", "-q", "-f", fmt, *opts, path, "64M")
    qemu("qemu-io", "-f", fmt, "-c", "write -P 0x5a 0 64k", "-c",
         "write -P 0xa5 %d 64k" % step, path)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    os.unlink(path)
    return data


def put(fmt_dir, name, data):
    d = os.path.join(OUT, fmt_dir)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def emit(fmt_dir, d, cases, fix=None):
    """each case of @cases (name: a function breaking a copy of @d), fixed up by @fix, written"""
    for name, fn in cases.items():
        x = bytearray(d)
        fn(x)
        if fix:
            fix(x)
        put(fmt_dir, name, x)


def u32(d, off, be=False):
    return struct.unpack_from(">I" if be else "<I", d, off)[0]


def u64(d, off, be=False):
    return struct.unpack_from(">Q" if be else "<Q", d, off)[0]


def p32(d, off, v, be=False):
    struct.pack_into(">I" if be else "<I", d, off, v & 0xffffffff)


def p64(d, off, v, be=False):
    struct.pack_into(">Q" if be else "<Q", d, off, v & 0xffffffffffffffff)


def qcow2():
    d = base("qcow2", [], MiB)
    cb = u32(d, 20, True)
    l1 = u64(d, 40, True)
    rt = u64(d, 48, True)
    l2 = u64(d, l1, True) & 0x00fffffffffffe00
    end = (len(d) + (1 << cb) - 1) >> cb << cb
    copied = 1 << 63
    cases = {
        "l1-past-eof": lambda x: p64(x, l1, copied | (end + 64 * MiB), True),
        "l1-at-refcount-table": lambda x: p64(x, l1, copied | rt, True),
        "l2-data-at-header": lambda x: p64(x, l2, copied, True),
        "l2-data-past-eof": lambda x: p64(x, l2, copied | (end + 256 * MiB), True),
        "l2-shared-cluster": lambda x: p64(x, l2 + 16 * 8, u64(x, l2, True), True),
        "l1-size-huge": lambda x: p32(x, 36, 0x7fffffff, True),
        "size-huge": lambda x: p64(x, 24, 1 << 62, True),
        "refcount-table-past-eof": lambda x: p64(x, 48, end + 128 * MiB, True),
        "cluster-bits-40": lambda x: p32(x, 20, 40, True),
        "l1-size-zero": lambda x: p32(x, 36, 0, True),
    }
    emit("qcow2", d, cases)


def vhd_csum(buf):
    return (~sum(buf)) & 0xffffffff


def vhd_fix(x):
    """recompute the footer (copy and end) and dynamic header checksums"""
    for off in (0, len(x) - 512):
        p32(x, off + 64, 0, True)
        p32(x, off + 64, vhd_csum(x[off:off + 512]), True)
    h = u64(x, 16, True)
    p32(x, h + 36, 0, True)
    p32(x, h + 36, vhd_csum(x[h:h + 1024]), True)


def vhd():
    d = base("vpc", ["-o", "subformat=dynamic,force_size=on"], 2 * MiB)
    h = u64(d, 16, True)
    bat = u64(d, h + 16, True)
    sec = len(d) // 512

    def footers(field, v, width):
        def f(x):
            for off in (0, len(x) - 512):
                (p64 if width == 8 else p32)(x, off + field, v, True)
        return f
    cases = {
        "bat-past-eof": lambda x: p32(x, bat, sec + 100000, True),
        "bat-at-header": lambda x: p32(x, bat, h // 512, True),
        "bat-at-bat": lambda x: p32(x, bat + 4, bat // 512, True),
        "bat-shared-block": lambda x: p32(x, bat + 8, u32(x, bat, True), True),
        "max-entries-huge": lambda x: p32(x, h + 28, 0x7fffffff, True),
        "block-size-odd": lambda x: p32(x, h + 32, 3 * 512, True),
        "block-size-zero": lambda x: p32(x, h + 32, 0, True),
        "bat-offset-past-eof": lambda x: p64(x, h + 16, len(x) * 8, True),
        "size-huge": footers(48, 1 << 62, 8),
    }
    emit("vhd", d, cases, vhd_fix)


def vdi():
    d = base("vdi", [], MiB)
    mo = u32(d, 340)
    nblocks = u32(d, 384)
    cases = {
        "map-past-allocated": lambda x: p32(x, mo, nblocks + 1000),
        "map-shared-slot": lambda x: p32(x, mo + 8, u32(x, mo)),
        "allocated-above-blocks": lambda x: p32(x, 388, nblocks + 10),
        "blocks-huge": lambda x: p32(x, 384, 0x7fffffff),
        "data-offset-past-eof": lambda x: p32(x, 344, len(x) * 4),
        "map-offset-past-eof": lambda x: p32(x, 340, len(x) * 4),
        "block-size-odd": lambda x: p32(x, 376, 1000),
        "block-extra-huge": lambda x: p32(x, 380, 0x7ffff000),
        "disk-size-huge": lambda x: p64(x, 368, 1 << 62),
    }
    emit("vdi", d, cases)


def qed():
    d = base("qed", [], 64 * 1024)
    l1 = u64(d, 40)
    l2 = u64(d, l1)
    cases = {
        "l1-past-eof": lambda x: p64(x, l1, len(x) + 64 * MiB),
        "l1-at-l1": lambda x: p64(x, l1, l1),
        "l2-misaligned": lambda x: p64(x, l2, 512),
        "l2-data-at-l1": lambda x: p64(x, l2, l1),
        "l2-past-eof": lambda x: p64(x, l2, len(x) + 128 * MiB),
        "l2-shared-cluster": lambda x: p64(x, l2 + 8 * 5, u64(x, l2)),
        "table-size-zero": lambda x: p32(x, 8, 0),
        "cluster-size-odd": lambda x: p32(x, 4, 3000),
        "image-size-huge": lambda x: p64(x, 48, 1 << 62),
    }
    emit("qed", d, cases)


def vhdx():
    d = base("vhdx", ["-o", "block_size=1M"], MiB)
    bat_guid = bytes.fromhex("6677c22d23f600429d64115e9bfd4a08")
    rt = 192 * 1024
    n = u32(d, rt + 8)
    bat = None
    for i in range(min(n, 2047)):
        e = rt + 16 + 32 * i
        if bytes(d[e:e + 16]) == bat_guid:
            bat = u64(d, e + 16)
    if bat is None:
        raise SystemExit("mkhostile: no BAT region in qemu-img's VHDX")
    full = 6     # PAYLOAD_BLOCK_FULLY_PRESENT
    cases = {
        "bat-past-eof": lambda x: p64(x, bat, ((len(x) >> 20) + 4096) << 20 | full),
        "bat-at-header": lambda x: p64(x, bat, 0 << 20 | full),
        "bat-at-bat": lambda x: p64(x, bat + 8, bat | full),
        "bat-shared-block": lambda x: p64(x, bat + 16, u64(x, bat)),
        "bat-bad-state": lambda x: p64(x, bat, u64(x, bat) & ~7 | 5),
        "bat-huge-offset": lambda x: p64(x, bat, (0xfffffffffff << 20) | full),
    }
    emit("vhdx", d, cases)


def vmdk():
    d = base("vmdk", ["-o", "subformat=monolithicSparse"], MiB)
    gd = u64(d, 56) * 512
    gt = u32(d, gd) * 512
    cases = {
        "gd-past-eof": lambda x: p32(x, gd, len(x) // 512 + 100000),
        "gd-at-header": lambda x: p32(x, gd, 1),
        "gt-past-eof": lambda x: p32(x, gt, len(x) // 512 + 100000),
        "gt-at-header": lambda x: p32(x, gt, 1),
        "gt-at-gd": lambda x: p32(x, gt + 4, gd // 512),
        "gt-shared-grain": lambda x: p32(x, gt + 4 * 3, u32(x, gt)),
        "gtes-zero": lambda x: p32(x, 44, 0),
        "gtes-huge": lambda x: p32(x, 44, 0x7fffffff),
        "capacity-huge": lambda x: p64(x, 12, 1 << 60),
        "grain-size-odd": lambda x: p64(x, 20, 3),
        "gd-offset-past-eof": lambda x: p64(x, 56, len(x) // 512 * 8),
    }
    emit("vmdk", d, cases)


def parallels():
    d = base("parallels", ["-o", "cluster_size=1M"], MiB)
    cases = {
        "bat-past-eof": lambda x: p32(x, 64, 0x7fffff),
        "bat-at-header": lambda x: p32(x, 64 + 4, 0),
        "bat-shared-cluster": lambda x: p32(x, 64 + 8, u32(x, 64)),
        "bat-entries-huge": lambda x: p32(x, 32, 0x7fffffff),
        "tracks-zero": lambda x: p32(x, 28, 0),
        "tracks-odd": lambda x: p32(x, 28, 3),
        "sectors-huge": lambda x: p64(x, 36, 1 << 62),
        "data-off-past-eof": lambda x: p32(x, 48, len(x) // 512 * 4),
    }
    emit("parallels", d, cases)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: mkhostile.py DIR")
    OUT = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    for make in (qcow2, vhd, vdi, qed, vhdx, vmdk, parallels):
        make()
