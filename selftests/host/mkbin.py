#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Write a 2048-byte-sector image (an ISO 9660 file system) as a CD track file of raw sectors.

  mkbin.py MODE ISO OUT      MODE: MODE1/2352, MODE2/2352 (form 1) or MODE2/2336

Each sector gets the sync pattern and the header (BCD address from 00:02:00, the mode byte) where
the mode has them, the MODE2 subheader (data, form 1) twice, the 2048 user bytes, and zeros for
EDC/ECC (vdimg does not check them). For the VM test 105-cue, whose guest has no Python.
"""
import sys

SYNC = b"\x00" + b"\xff" * 10 + b"\x00"


def bcd(v):
    return ((v // 10) << 4) | (v % 10)


def main():
    mode, src, out = sys.argv[1:4]
    data = open(src, "rb").read()
    assert len(data) % 2048 == 0
    size = {"MODE1/2352": 2352, "MODE2/2352": 2352, "MODE2/2336": 2336}[mode]
    with open(out, "wb") as f:
        for i in range(len(data) // 2048):
            a = i + 150
            sec = b""
            if size == 2352:
                sec = SYNC + bytes([bcd(a // 4500), bcd(a // 75 % 60), bcd(a % 75),
                                    1 if mode.startswith("MODE1") else 2])
            if mode.startswith("MODE2"):
                sec += bytes([0, 0, 8, 0]) * 2
            sec += data[i * 2048:(i + 1) * 2048]
            f.write(sec + bytes(size - len(sec)))


if __name__ == "__main__":
    main()
