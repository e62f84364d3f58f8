#!/bin/sh
# Outside CI: 345-dm-flakey on every writable format. Run it with
#   VM_EXTRA_TESTS=selftests/vm/extra-logwrites selftests/vm/run.sh --kernel 6.12.95+deb12-amd64 --filter '^346-'
# timeout: 1200
LW_FULL=1
. /vmtest/tests/345-dm-flakey.sh
