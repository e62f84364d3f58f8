#!/bin/sh
# Outside CI: 340-log-writes on every writable format with every 8th flush/FUA point and every mark checked (the shorter full run). Run it with
#   VM_EXTRA_TESTS=selftests/vm/extra-logwrites selftests/vm/run.sh --kernel 6.12.95+deb12-amd64 --filter '^342-' --timeout 7200
# timeout: 7000
LW_FULL=1
LW_EVERY=8
. /vmtest/tests/340-log-writes.sh
