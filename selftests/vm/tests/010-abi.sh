#!/bin/sh
# Control ABI negatives and lifecycle through raw ioctls (abi_test.c): sizes, flags, fds, EPERM, ENXIO
. /vmtest/lib.sh
[ -x /vmtest/abi_test ] || skip "abi_test was not built"
VDIMGCTL=/bin/true require_vdimg
exec /vmtest/abi_test "$TEST_WORK"
