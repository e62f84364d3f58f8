#!/bin/sh
# Outside CI: 347-faults on every writable format where the test's CI set takes a few (dm-error, truncation) and raw in the ENOSPC case. Run it with
#   VM_EXTRA_TESTS=selftests/vm/extra-logwrites selftests/vm/run.sh --kernel 6.12.95+deb12-amd64 --filter '^348-'
# timeout: 1200
FAULTS_FULL=1
. /vmtest/tests/347-faults.sh
