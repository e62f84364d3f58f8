#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# secureboot.sh [--kernel RELEASE] [--keep]: the DKMS-signed module under UEFI Secure Boot, on real
# firmware (outside CI: a few minutes under TCG). qemu (q35, SMM) runs OVMF with Secure Boot on
# and Microsoft's keys (OVMF_CODE_4M.secboot.fd, OVMF_VARS_4M.ms.fd from the ovmf package), with
# the DKMS signing certificate added to MokList in the variable store (virt-fw-vars --add-mok, what
# "mokutil --import" and the MOK manager's enrollment leave behind). The firmware boots Debian's
# Microsoft-signed shim from a FAT disk (EFI/BOOT/BOOTX64.EFI), shim Debian's signed GRUB, GRUB
# the Debian-signed kernel from /boot (RELEASE, default the newest 6.12), with a busybox initramfs
# whose /init checks that
#   - the firmware has Secure Boot on and the kernel is locked down (integrity);
#   - the kernel loaded the DKMS certificate from MokListRT into a keyring;
#   - vdimg.ko unsigned is refused, signed with a key that is not enrolled is refused;
#   - vdimg.ko signed with the DKMS key (sign-file, as DKMS does) loads and registers its device.
# vdimg.ko is built here (selftests/vm/build-module.sh) against /usr/src/linux-headers-RELEASE.
# The DKMS key is /var/lib/dkms/mok.{key,pub} when it exists (read only), else one made the way
# DKMS makes it, in the scratch directory. shim and GRUB come from shim-signed and
# grub-efi-amd64-signed when installed, else from their .debs fetched with apt-get download
# (unpacked, never installed). Needs: ovmf, python3-virt-firmware (bookworm-backports),
# sbsigntool, qemu-system-x86, busybox-static, cpio, openssl, xz-utils. KTAP output, last line
# "N passed, N failed, N skipped".
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
release=
keep=
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) release=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	-h | --help) sed -n '3,22p' "$0"; exit 0 ;;
	*) echo "secureboot.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
[ -n "$release" ] || release=$(ls /boot/vmlinuz-6.12.*-amd64 2>/dev/null | sort -V | tail -n1 | sed 's|^/boot/vmlinuz-||')
SB_TIMEOUT=${SB_TIMEOUT:-600}
ovmf=/usr/share/OVMF
N=0 P=0 F=0 S=0
ok() { N=$((N + 1)); P=$((P + 1)); echo "ok $N - $*"; }
not_ok() { N=$((N + 1)); F=$((F + 1)); echo "not ok $N - $*"; }
finish() { echo "1..$N"; echo "$P passed, $F failed, $S skipped"; [ "$F" -eq 0 ]; exit; }
skip_all() { printf 'ok 1 - Secure Boot # SKIP %s\n1..1\n0 passed, 0 failed, 1 skipped\n' "$*"; exit 0; }
echo "TAP version 13"

hdr=/usr/src/linux-headers-$release
for f in "/boot/vmlinuz-$release" "$hdr/Makefile" "$hdr/scripts/sign-file" "$ovmf/OVMF_CODE_4M.secboot.fd" \
	"$ovmf/OVMF_VARS_4M.ms.fd"; do
	[ -e "$f" ] || skip_all "$f is missing (linux-headers-$release, ovmf)"
done
for t in qemu-system-x86_64 virt-fw-vars busybox openssl xz cpio sbverify; do
	command -v "$t" >/dev/null || skip_all "$t is not installed"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-sb.XXXXXX")
if [ -n "$keep" ]; then echo "# scratch directory: $work"; else trap 'rm -rf "$work"' EXIT; fi

# shim and GRUB, signed
shim=/usr/lib/shim/shimx64.efi.signed grub=/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed
if [ ! -f "$shim" ] || [ ! -f "$grub" ]; then
	mkdir -p "$work/debs" "$work/pkgroot"
	(cd "$work/debs" && apt-get download shim-signed grub-efi-amd64-signed >"$work/download.log" 2>&1) ||
		{ sed 's/^/# /' "$work/download.log"; skip_all "apt-get download shim-signed grub-efi-amd64-signed failed"; }
	for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$work/pkgroot"; done
	shim=$work/pkgroot$shim grub=$work/pkgroot$grub
fi
# the chain of trust the firmware and shim check: shim by Microsoft, GRUB and the kernel by Debian
if sbverify --list "$shim" 2>/dev/null | grep -q 'Microsoft' &&
	sbverify --list "$grub" 2>/dev/null | grep -q 'Debian Secure Boot' &&
	sbverify --list "/boot/vmlinuz-$release" 2>/dev/null | grep -q 'Debian Secure Boot'; then
	ok "shim is signed by Microsoft, GRUB and vmlinuz-$release by Debian"
else
	not_ok "shim is signed by Microsoft, GRUB and vmlinuz-$release by Debian"
	finish
fi

# the module, and its three signings
if ! "$top/selftests/vm/build-module.sh" "$hdr" "$work/module" >/dev/null 2>&1; then
	tail -n 20 "$work/module/build.log" | sed 's/^/# /'
	not_ok "vdimg.ko builds against $hdr"
	finish
fi
mkdir -p "$work/keys" "$work/root/lib/modules"
if [ -r /var/lib/dkms/mok.key ] && [ -r /var/lib/dkms/mok.pub ]; then
	mok_key=/var/lib/dkms/mok.key mok_pub=/var/lib/dkms/mok.pub
	echo "# the DKMS key: /var/lib/dkms/mok.pub"
else
	# what dkms does when /var/lib/dkms/mok.key is missing
	mok_key=$work/keys/mok.key mok_pub=$work/keys/mok.pub
	openssl req -new -x509 -nodes -days 36500 -subj "/CN=DKMS module signing key" -newkey rsa:2048 \
		-keyout "$mok_key" -outform DER -out "$mok_pub" 2>/dev/null
	echo "# the DKMS key: a new one made as dkms makes it (no /var/lib/dkms/mok.key here)"
fi
openssl req -new -x509 -nodes -days 1 -subj "/CN=not enrolled" -newkey rsa:2048 \
	-keyout "$work/keys/other.key" -outform DER -out "$work/keys/other.pub" 2>/dev/null
openssl x509 -inform DER -in "$mok_pub" -out "$work/keys/mok.pem"
hash=$(sed -n 's/^CONFIG_MODULE_SIG_HASH="\(.*\)"/\1/p' "/boot/config-$release")
m=$work/root/lib/modules
cp "$work/module/vdimg.ko" "$m/vdimg-unsigned.ko"
cp "$work/module/vdimg.ko" "$m/vdimg-mok.ko"
cp "$work/module/vdimg.ko" "$m/vdimg-other.ko"
if [ -z "$(modinfo -F signer "$m/vdimg-unsigned.ko")" ] &&
	"$hdr/scripts/sign-file" "${hash:-sha256}" "$mok_key" "$mok_pub" "$m/vdimg-mok.ko" &&
	"$hdr/scripts/sign-file" "${hash:-sha256}" "$work/keys/other.key" "$work/keys/other.pub" \
		"$m/vdimg-other.ko" &&
	[ "$(modinfo -F signer "$m/vdimg-mok.ko")" = "DKMS module signing key" ]; then
	ok "vdimg.ko: unsigned, signed with the DKMS key ($hash), signed with a key not enrolled"
else
	not_ok "vdimg.ko: unsigned, signed with the DKMS key, signed with a key not enrolled"
	finish
fi
# its dependencies, Debian-signed: crc32c for libcrc32c, then libcrc32c; efivarfs for /init
for mod in crc32c_generic libcrc32c efivarfs; do
	f=$(modinfo -k "$release" -F filename "$mod") || { not_ok "$mod: not found for $release"; finish; }
	case $f in
	"(builtin)") ;;
	*.xz) xz -dc "$f" >"$m/$mod.ko" ;;
	*) cp "$f" "$m/$mod.ko" ;;
	esac
done

# the initramfs: busybox and an /init that reports in KTAP on the console, then powers off
mkdir -p "$work/root/bin" "$work/root/proc" "$work/root/sys" "$work/root/dev"
cp "$(command -v busybox)" "$work/root/bin/busybox"
cat >"$work/root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
mount -t devtmpfs devtmpfs /dev
[ ! -f /lib/modules/efivarfs.ko ] || insmod /lib/modules/efivarfs.ko
mount -t efivarfs efivarfs /sys/firmware/efi/efivars
n=0
ok() { n=$((n + 1)); echo "SB: ok $n - $*"; }
not_ok() { n=$((n + 1)); echo "SB: not ok $n - $*"; }
# SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c: 4 attribute bytes, then 1
set -- $(od -An -tu1 </sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c)
sb=${5:-}
if [ "$sb" = 1 ]; then ok "the firmware booted with Secure Boot on"; else not_ok "Secure Boot is on (SecureBoot=$sb)"; fi
ld=$(cat /sys/kernel/security/lockdown 2>/dev/null)
case $ld in
*"[integrity]"* | *"[confidentiality]"*) ok "the kernel is locked down: $ld" ;;
*) not_ok "the kernel is locked down (lockdown: $ld)" ;;
esac
dmesg | grep -i -e 'secure boot' -e 'MOK' -e 'machine' -e 'X.509' | sed 's/^/SB: # dmesg: /'
# shim hands MokList to the kernel (MokListRT), which trusts it for modules (the .machine keyring)
if dmesg | grep -q "Loaded X.509 cert 'DKMS module signing key" &&
	grep -q 'asymmetri DKMS module signing key' /proc/keys; then
	ok "the kernel loaded the DKMS certificate from MokListRT into a keyring"
else
	not_ok "the kernel loaded the DKMS certificate from MokListRT into a keyring"
fi
for mod in crc32c_generic libcrc32c; do
	[ ! -f /lib/modules/$mod.ko ] || insmod /lib/modules/$mod.ko || not_ok "$mod (Debian-signed) loads"
done
for v in unsigned other; do
	if out=$(insmod /lib/modules/vdimg-$v.ko 2>&1); then
		not_ok "vdimg.ko $v loaded under lockdown"
		rmmod vdimg
	else
		ok "vdimg.ko $v is refused: $out"
	fi
done
if out=$(insmod /lib/modules/vdimg-mok.ko 2>&1) && [ -d /sys/module/vdimg ]; then
	ok "vdimg.ko signed with the DKMS key (enrolled in MokList) loads"
	if [ -c /dev/vdimg-control ] || grep -q vdimg /proc/misc; then
		ok "vdimg registered its control device"
	else
		not_ok "vdimg registered its control device"
	fi
	dmesg | grep -i vdimg | tail -n 3 | sed 's/^/SB: # dmesg: /'
else
	not_ok "vdimg.ko signed with the DKMS key loads: $out"
	dmesg | tail -n 5 | sed 's/^/SB: # dmesg: /'
fi
echo "SB: done $n"
poweroff -f
EOF
chmod 755 "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initrd.gz"

# the EFI system partition, as a directory qemu shows as a FAT disk (vvfat)
esp=$work/esp
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/debian"
cp "$shim" "$esp/EFI/BOOT/BOOTX64.EFI"
cp "$grub" "$esp/EFI/BOOT/grubx64.efi"
cp "/boot/vmlinuz-$release" "$esp/vmlinuz"
cp "$work/initrd.gz" "$esp/initrd.gz"
cat >"$esp/EFI/debian/grub.cfg" <<'EOF'
set timeout=0
search --no-floppy --file --set=root /vmlinuz
linux /vmlinuz console=ttyS0 panic=-1 loglevel=4
initrd /initrd.gz
boot
EOF
cp "$esp/EFI/debian/grub.cfg" "$esp/EFI/BOOT/grub.cfg"

# the variable store: Microsoft's keys, Secure Boot on, the DKMS certificate in MokList
cp "$ovmf/OVMF_VARS_4M.ms.fd" "$work/vars-ms.fd"
if virt-fw-vars -i "$work/vars-ms.fd" -o "$work/vars.fd" --sb \
	--add-mok 605dab50-e046-4300-abb6-3dd810dd8b23 "$work/keys/mok.pem" >"$work/vars.log" 2>&1; then
	ok "OVMF variables: Microsoft's keys, Secure Boot, the DKMS certificate in MokList"
else
	sed 's/^/# /' "$work/vars.log"
	not_ok "virt-fw-vars --add-mok"
	finish
fi

t0=$SECONDS
timeout "$SB_TIMEOUT" nice -n 10 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 -display none \
	-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on \
	-drive if=pflash,format=raw,unit=0,readonly=on,file="$ovmf/OVMF_CODE_4M.secboot.fd" \
	-drive if=pflash,format=raw,unit=1,file="$work/vars.fd" \
	-drive if=virtio,format=raw,readonly=on,file="fat:$esp" \
	-serial file:"$work/console.log" -no-reboot -net none </dev/null >"$work/qemu.log" 2>&1
rc=$?
echo "# qemu: exit $rc after $((SECONDS - t0)) s"
if grep -q '^SB: done' "$work/console.log"; then
	ok "shim, GRUB and the kernel booted under Secure Boot ($((SECONDS - t0)) s)"
else
	tail -n 40 "$work/console.log" | tr -d '\r' | sed 's/^/# /'
	sed 's/^/# qemu: /' "$work/qemu.log"
	not_ok "boot through shim and GRUB to /init (qemu exit $rc)"
	finish
fi
tr -d '\r' <"$work/console.log" | sed -n 's/^SB: \(# .*\)$/\1/p'
while read -r l; do
	case $l in
	"ok "*) ok "${l#ok [0-9]* - }" ;;
	"not ok "*) not_ok "${l#not ok [0-9]* - }" ;;
	esac
done < <(tr -d '\r' <"$work/console.log" | sed -n 's/^SB: \(\(not \)\{0,1\}ok .*\)$/\1/p')
finish
