# SPDX-License-Identifier: GPL-2.0
#
# make                 the module (vdimg.ko) and the userspace tool and library
# make modules KDIR=/usr/src/linux-headers-<release>
# make tools           vdimgctl and build/libvdimg.a
# make check           host tests, then the VM tests on every target kernel
# make check-host      host tests only (ASan/UBSan)
# make check-vm        VM tests (KERNELS="6.1.0-56-amd64 ..." to choose)
# make samples         fetch the third-party sample images the tests read (selftests/samples.sh)
# make bench           fio benchmark table in the VM
# make bench-convert   vdimgctl convert against qemu-img convert on this host
# make demo            boot the VM, attach a sample image, mount it, detach
# make install         vdimgctl, the udev rule, the boot files (initramfs-tools hook and script,
#                      dracut module, shutdown hook), mount.vdimg, vdimgtab and its systemd
#                      generator, bash and zsh completion, the man page; DESTDIR, PREFIX (default /usr)
# make modules_install the module into /lib/modules/RELEASE/updates (KDIR as for make modules)
# make install-dkms    the module's sources into PREFIX/src/vdimg-VERSION for dkms

KDIR ?= $(firstword $(wildcard /lib/modules/$(shell uname -r)/build) \
	$(lastword $(sort $(wildcard /usr/src/linux-headers-*-amd64))))
W ?= 1

CC ?= gcc
BUILD := build
# the version: debian/changelog's first entry is the one place it is written (vdimgctl --version,
# make install-dkms, the packages); selftests/host/test_pkg.sh checks that dkms.conf, the man
# pages and the docs say the same
VERSION := $(shell awk -F '[()]' 'NR == 1 { print $$2 }' debian/changelog)
ifeq ($(VERSION),)
$(error no version in debian/changelog)
endif
USER_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
	-D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I. -Iinclude -Itools/lib
# distribution build flags (debian/rules: dpkg-buildflags' CFLAGS, CPPFLAGS and LDFLAGS)
USER_CFLAGS += $(EXTRA_USER_CFLAGS)
USER_CFLAGS += -DVDIMGCTL_VERSION='"$(VERSION)"'
SAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
# kernel-shared: the backends, compiled unchanged into vdimg.ko (Kbuild) and into libvdimg
SHARED_SRCS := backends/registry.c backends/raw.c
SHARED_SRCS += backends/vdi/open.c backends/vdi/map.c
SHARED_SRCS += backends/vhd_common.c backends/vhd/open.c backends/vhd/map.c
SHARED_SRCS += backends/vhdx/open.c backends/vhdx/map.c backends/vhdx/log.c
SHARED_SRCS += backends/cluster_table.c
SHARED_SRCS += backends/qcow2/open.c backends/qcow2/map.c backends/qcow2/alloc.c \
	backends/qcow2/snapshot.c
SHARED_SRCS += backends/qed/open.c backends/qed/map.c backends/qed/cache.c
SHARED_SRCS += backends/qcow.c
SHARED_SRCS += backends/vmdk/vmdk.c backends/vmdk/descriptor.c backends/vmdk/sparse.c \
	backends/vmdk/stream.c
SHARED_SRCS += backends/vmdk/sesparse.c
SHARED_SRCS += backends/cue.c
SHARED_SRCS += backends/dmg/open.c backends/dmg/map.c backends/dmg/adc.c
SHARED_SRCS += backends/dmg/bzip2.c
SHARED_SRCS += backends/dmg/lzfse.c
SHARED_SRCS += backends/dmg/lzma.c
SHARED_SRCS += backends/parallels.c
# userspace only: the platform shim's userspace side, chain I/O, and the formats' tool operations
USER_LIB_SRCS := tools/lib/platform.c tools/lib/decompress.c tools/lib/open.c tools/lib/io.c
USER_LIB_SRCS += tools/lib/chainops.c tools/lib/tool-ops.c
USER_LIB_SRCS += $(sort $(wildcard tools/lib/formats/*.c tools/lib/formats/*/*.c))
LIB_SRCS := $(SHARED_SRCS) $(USER_LIB_SRCS)
LIB_LIBS := -lz -lzstd
TOOL_SRCS := $(wildcard tools/vdimgctl/*.c)
TOOL_LIBS := $(shell pkg-config --libs smartcols 2>/dev/null || echo -lsmartcols)
HDRS := $(wildcard include/vdimg/*.h include/uapi/linux/*.h tools/lib/*.h backends/*.h backends/*/*.h)

.PHONY: all modules tools clean check check-host check-vm bench bench-convert demo debug-kernel samples

all: modules tools

modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) W=$(W) modules

tools: tools/vdimgctl/vdimgctl $(BUILD)/libvdimg.a

$(BUILD)/user/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(USER_CFLAGS) -c -o $@ $<

$(BUILD)/asan/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(USER_CFLAGS) $(SAN_CFLAGS) -c -o $@ $<

$(BUILD)/libvdimg.a: $(LIB_SRCS:%.c=$(BUILD)/user/%.o)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libvdimg-asan.a: $(LIB_SRCS:%.c=$(BUILD)/asan/%.o)
	rm -f $@ && ar rcs $@ $^

# --version: rebuilt when the version changes
$(BUILD)/user/tools/vdimgctl/vdimgctl.o: debian/changelog

tools/vdimgctl/vdimgctl: $(TOOL_SRCS:%.c=$(BUILD)/user/%.o) $(BUILD)/libvdimg.a
	$(CC) $(EXTRA_USER_LDFLAGS) -o $@ $^ $(TOOL_LIBS) $(LIB_LIBS)

-include selftests/host/Makefile.inc

# libFuzzer targets (selftests/fuzz/fuzz_<fmt>.c): `make fuzz-smoke` runs each for FUZZ_SECONDS.
# The library is compiled once, instrumented for coverage (fuzzer-no-link) and the sanitizers,
# and every target links against it.
FUZZ_SRCS := $(wildcard selftests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:selftests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_CFLAGS := -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I. -Iinclude -Itools/lib
FUZZ_SECONDS ?= 20

$(BUILD)/fuzz/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(BUILD)/fuzz/libvdimg-fuzz.a: $(LIB_SRCS:%.c=$(BUILD)/fuzz/obj/%.o)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BINS): $(BUILD)/fuzz/%: selftests/fuzz/%.c selftests/fuzz/fuzz_common.h $(HDRS) \
		$(BUILD)/fuzz/libvdimg-fuzz.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(BUILD)/fuzz/libvdimg-fuzz.a $(LIB_LIBS) \
		-lpthread
# the XML reader of vdimgctl, which that target includes
$(BUILD)/fuzz/fuzz_vbox_xml: tools/vdimgctl/xml.c tools/vdimgctl/xml.h

.PHONY: fuzz fuzz-smoke
fuzz: $(FUZZ_BINS)

fuzz-smoke: $(FUZZ_BINS)
	selftests/fuzz/smoke.sh $(FUZZ_SECONDS) $(FUZZ_BINS)

check: check-host check-vm

samples:
	selftests/samples.sh

check-vm: all
	selftests/vm/run.sh

bench: all
	selftests/vm/bench.sh

bench-convert: tools
	selftests/bench-convert.sh

demo: all
	selftests/vm/demo.sh

debug-kernel:
	selftests/vm/debug-kernel.sh

clean:
	-$(MAKE) -C $(KDIR) M=$(CURDIR) clean
	rm -rf $(BUILD) tools/vdimgctl/vdimgctl

# make install: the userspace side of booting from an image file and of using vdimg at all. The
# module itself is installed with DKMS (dkms.conf) or `make modules_install`-style by kbuild.
PREFIX ?= /usr
# util-linux mount looks for helpers in /sbin only (the same directory on merged-/usr systems)
MOUNT_HELPER_DIR ?= /sbin
DESTDIR ?=
.PHONY: install
install: tools
	install -D -m 0755 tools/vdimgctl/vdimgctl $(DESTDIR)$(PREFIX)/sbin/vdimgctl
	install -D -m 0644 udev/60-vdimg.rules $(DESTDIR)$(PREFIX)/lib/udev/rules.d/60-vdimg.rules
	install -D -m 0755 boot/vdimg-boot $(DESTDIR)$(PREFIX)/lib/vdimg/vdimg-boot
	install -D -m 0755 boot/initramfs-tools/hooks/vdimg \
		$(DESTDIR)$(PREFIX)/share/initramfs-tools/hooks/vdimg
	install -D -m 0755 boot/initramfs-tools/scripts/local-top/vdimg \
		$(DESTDIR)$(PREFIX)/share/initramfs-tools/scripts/local-top/vdimg
	install -D -m 0755 dracut/90vdimg/module-setup.sh \
		$(DESTDIR)$(PREFIX)/lib/dracut/modules.d/90vdimg/module-setup.sh
	install -D -m 0755 dracut/90vdimg/vdimg-cmdline.sh \
		$(DESTDIR)$(PREFIX)/lib/dracut/modules.d/90vdimg/vdimg-cmdline.sh
	install -D -m 0755 boot/vdimg.shutdown \
		$(DESTDIR)$(PREFIX)/lib/systemd/system-shutdown/vdimg.shutdown
	install -D -m 0755 tools/system/mount.vdimg $(DESTDIR)$(MOUNT_HELPER_DIR)/mount.vdimg
	install -D -m 0755 tools/system/vdimgtab $(DESTDIR)$(PREFIX)/lib/vdimg/vdimgtab
	install -D -m 0755 tools/system/vdimg-id $(DESTDIR)$(PREFIX)/lib/vdimg/vdimg-id
	install -D -m 0755 tools/system/vdimg-generator \
		$(DESTDIR)$(PREFIX)/lib/systemd/system-generators/vdimg-generator
	install -D -m 0644 tools/system/vdimg@.service \
		$(DESTDIR)$(PREFIX)/lib/systemd/system/vdimg@.service
	install -D -m 0644 tools/completion/vdimgctl \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/vdimgctl
	ln -sf vdimgctl $(DESTDIR)$(PREFIX)/share/bash-completion/completions/mount.vdimg
	install -D -m 0644 tools/completion/_vdimgctl \
		$(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_vdimgctl
	install -D -m 0644 $(BUILD)/vdimgctl.8 $(DESTDIR)$(PREFIX)/share/man/man8/vdimgctl.8
	install -D -m 0644 $(BUILD)/mount.vdimg.8 $(DESTDIR)$(PREFIX)/share/man/man8/mount.vdimg.8
	install -D -m 0644 $(BUILD)/vdimgtab.5 $(DESTDIR)$(PREFIX)/share/man/man5/vdimgtab.5

# the man pages (python3-docutils)
MAN_PAGES := $(BUILD)/vdimgctl.8 $(BUILD)/mount.vdimg.8 $(BUILD)/vdimgtab.5
$(BUILD)/vdimgctl.8: tools/vdimgctl/vdimgctl.rst
$(BUILD)/mount.vdimg.8: tools/system/mount.vdimg.rst
$(BUILD)/vdimgtab.5: tools/system/vdimgtab.rst
$(MAN_PAGES):
	@mkdir -p $(dir $@)
	rst2man $< $@
.PHONY: man
man: $(MAN_PAGES)
install: man

# make modules_install: vdimg.ko into /lib/modules/<release>/updates (kbuild's INSTALL_MOD_PATH,
# INSTALL_MOD_DIR), then depmod
INSTALL_MOD_DIR ?= updates
.PHONY: modules_install install-dkms
modules_install: modules
	$(MAKE) -C $(KDIR) M=$(CURDIR) INSTALL_MOD_DIR=$(INSTALL_MOD_DIR) modules_install

# make install-dkms: the module's sources as DKMS wants them, /usr/src/vdimg-<version>
DKMS_DIR = $(DESTDIR)$(PREFIX)/src/vdimg-$(VERSION)
DKMS_FILES := Kbuild dkms.conf $(wildcard drivers/*.[ch] backends/*.[ch] backends/*/*.[ch] \
	include/vdimg/*.h include/uapi/linux/*.h)
install-dkms:
	for f in $(DKMS_FILES); do install -D -m 0644 $$f $(DKMS_DIR)/$$f || exit 1; done
	install -m 0644 Makefile.dkms $(DKMS_DIR)/Makefile
	sed -i 's/^PACKAGE_VERSION=.*/PACKAGE_VERSION="$(VERSION)"/' $(DKMS_DIR)/dkms.conf
