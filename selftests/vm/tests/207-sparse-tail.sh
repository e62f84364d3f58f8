#!/bin/sh
# First writes at an image's end (drivers/io.c, vdimg_file_ahead()): qcow2, QED, VDI, VMDK and Parallels images made by qemu-img, written with 4 KiB writes into new 64 KiB..1 MiB units at depth 16 and with 1 MiB writes: while attached the file grows, and after the detach it ends where the image does (qcow2: the image-end-offset qemu-img reports), qemu-img check is clean (QED and Parallels count a tail as leaked space) and qemu-img reads what was written
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG" "$QEMU_IO"

W=$TEST_WORK
size=64M
for f in qcow2 qed vdi vmdk parallels; do
	t="$f by qemu-img"
	img=$W/tail.$f
	rm -f "$img" "$W/exp.raw"
	"$QEMU_IMG" create -q -f "$f" "$img" "$size" || { fail "$t: create"; continue; }
	before=$(stat -c %s "$img")
	dev=$(vd_attach "$img") || { fail "$t: attach read-write"; continue; }
	# 4 KiB at the start of every 256 KiB of the first 16 MiB (new units, most of each left a
	# hole), then 1 MiB writes over 8 MiB more (whole units)
	check "$t: 4 KiB first writes, depth 16, verified" "$FIO" --name=small --direct=1 \
		--ioengine=libaio --iodepth=16 --rw=write:252k --bs=4k --size=16M --number_ios=64 \
		--verify=crc32c --verify_fatal=1 --do_verify=1 \
		--filename="$dev" --output="$W/fio-small.out"
	check "$t: 1 MiB first writes, verified" "$FIO" --name=big --direct=1 \
		--ioengine=libaio --iodepth=8 --rw=write --bs=1M --offset=32M --size=8M \
		--verify=crc32c --verify_fatal=1 --do_verify=1 --filename="$dev" \
		--output="$W/fio-big.out"
	during=$(stat -c %s "$img")
	[ "$during" -gt "$before" ]
	check_eq "$t: the file grew while attached ($before -> $during)" $? 0
	dd if="$dev" of="$W/exp.raw" bs=1M status=none || fail "$t: read the device"
	check "$t: detach" vd_detach "$dev"
	after=$(stat -c %s "$img")
	if [ "$f" = qcow2 ]; then
		end=$("$QEMU_IMG" check --output=json "$img" 2>/dev/null |
			sed -n 's/.*"image-end-offset": *\([0-9]*\).*/\1/p')
		check_eq "$t: after the detach the file ends at the image's end" "$after" "${end:-?}"
	fi
	[ "$after" -lt "$during" ]
	check_eq "$t: the detach trimmed the tail ($during -> $after)" $? 0
	check "$t: qemu-img check clean" qemu_check "$f" "$img"
	check_eq "$t: qemu-img reads what the device read" "$(raw_sha "$img" "$f")" \
		"$(sha_of "$W/exp.raw")"
	rm -f "$img" "$W/exp.raw"
done
done_testing
