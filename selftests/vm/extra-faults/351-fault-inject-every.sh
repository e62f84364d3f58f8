#!/bin/sh
# Outside CI: 350-fault-inject walking every fault-injection point of the attach and detach ioctls, every writable format, and more K in the I/O path (debug kernel only). Run it with
#   VM_EXTRA_TESTS=selftests/vm/extra-faults selftests/vm/run.sh --kernel debug --filter '^351-' --timeout 7200
# timeout: 7000
FI_EVERY=1
. /vmtest/tests/350-fault-inject.sh
