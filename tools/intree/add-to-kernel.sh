#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# add-to-kernel.sh KERNEL_SRC: put the module's sources into a kernel tree as drivers/block/vdimg/
# (Kbuild, Kconfig, drivers/, backends/, include/), source its Kconfig from drivers/block/Kconfig
# and descend into it from drivers/block/Makefile. Then configure BLK_DEV_VDIMG=m or =y and build
# as usual. Running it again refreshes the sources and leaves the two edits as they are. The copy of
# include/vdimg/compat.h keeps only the tree's own side of each kernel version test, so the in-tree
# sources carry no LINUX_VERSION_CODE.
# drivers/block/Kconfig and drivers/block/Makefile are rewritten (sed -i: new files), never
# modified in place, so a tree of hard links (cp -al) keeps its original intact.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
ksrc=${1:?usage: add-to-kernel.sh KERNEL_SRC}
blk=$ksrc/drivers/block
[ -f "$blk/Kconfig" ] && [ -f "$blk/Makefile" ] || { echo "$ksrc: not a kernel tree" >&2; exit 1; }
dst=$blk/vdimg
rm -rf "$dst"
mkdir -p "$dst"
(cd "$top" && find Kbuild Kconfig drivers backends include -name '*.[ch]' -o -name Kbuild -o -name Kconfig) |
while read -r f; do
	mkdir -p "$dst/$(dirname "$f")"
	cp "$top/$f" "$dst/$f"
done
# compat.h keeps only this tree's side of each kernel version test (kversion.awk)
kv=$(awk -F' *= *' '$1 == "VERSION" { v = $2 } $1 == "PATCHLEVEL" { p = $2 }
	$1 == "SUBLEVEL" { s = $2 } END { if (v != "") print v * 65536 + p * 256 + (s > 255 ? 255 : s) }' \
	"$ksrc/Makefile")
[ -n "$kv" ] || { echo "$ksrc/Makefile: no kernel version" >&2; exit 1; }
awk -v kv="$kv" -f "$top/tools/intree/kversion.awk" "$top/include/vdimg/compat.h" \
	>"$dst/include/vdimg/compat.h"
if ! grep -q 'drivers/block/vdimg/Kconfig' "$blk/Kconfig"; then
	# before the closing endif of "if BLK_DEV"
	last=$(grep -n '^endif' "$blk/Kconfig" | tail -n1 | cut -d: -f1)
	sed -i "${last}i source \"drivers/block/vdimg/Kconfig\"\\n" "$blk/Kconfig"
fi
if ! grep -q 'CONFIG_BLK_DEV_VDIMG' "$blk/Makefile"; then
	sed -i '$a obj-$(CONFIG_BLK_DEV_VDIMG)\t+= vdimg/' "$blk/Makefile"
fi
echo "drivers/block/vdimg: added to $ksrc"
