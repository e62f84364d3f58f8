#!/bin/sh
# Harness self-test, outside CI: a guest killed mid-run by what looks like the emulator's double fault boots once more for this test and the tests after it (run.sh, ktap.py --emulator-fault). Run it with
#   VM_EXTRA_TESTS=selftests/vm/extra-harness selftests/vm/run.sh --kernel 6.12.95+deb12-amd64 --filter '^00[12]-'
# and expect 001-harness, the boot and this test to pass under a "the first VM died of a double fault during 002-emulator-fault" diagnostic. In the first boot (nothing skipped yet) it prints the panic line of such a fault and crashes the kernel (at level 0: the console shows only those, init.sh).
. /vmtest/lib.sh
if [ -z "${VMTEST_SKIP:-}" ]; then
	echo "<0>traps: PANIC: double fault, error_code: 0x0 (simulated by 002-emulator-fault)" >/dev/kmsg
	echo c >/proc/sysrq-trigger
	sleep 10
fi
check "the second boot skips the tests the first finished (VMTEST_SKIP=$VMTEST_SKIP)" \
	sh -c 'echo 001-harness | grep -qE -- "$VMTEST_SKIP"'
done_testing
