#!/bin/sh
# Outside CI: 340-log-writes with every flush/FUA/mark point of every writable format checked. Run it with
#   VM_EXTRA_TESTS=selftests/vm/extra-logwrites selftests/vm/run.sh --kernel 6.12.95+deb12-amd64 --filter '^341-'
#   (add --timeout 20000: every point of 8 formats is a few hours under TCG)
# timeout: 19000
LW_FULL=1
. /vmtest/tests/340-log-writes.sh
