#!/bin/sh
# Outside CI: 360-hostile-images over every fuzz corpus entry (CI replays one in 20 on 6.12 and only
# the hand-made images on the debug kernel). On the debug kernel (KASAN, lockdep) it is the issue-16 run of hostile
# images through the kernel:
#   VM_EXTRA_TESTS=selftests/vm/extra-stress selftests/vm/run.sh --kernel debug --timeout 14400 --filter '^361-'
# timeout: 14000
HOSTILE_EVERY=1
. /vmtest/tests/360-hostile-images.sh
