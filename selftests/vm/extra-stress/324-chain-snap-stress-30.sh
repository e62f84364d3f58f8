#!/bin/sh
# Outside CI: 323-chain-snap-stress with tstVDSnap's 30 rounds per format (CI runs 15). Run it with
#   VM_EXTRA_TESTS=selftests/vm/extra-stress selftests/vm/run.sh --kernel 6.12.95+deb12-amd64 --filter '^324-'
# timeout: 1500
STRESS_ROUNDS=30
. /vmtest/tests/323-chain-snap-stress.sh
