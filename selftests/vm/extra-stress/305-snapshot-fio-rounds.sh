#!/bin/sh
# Outside CI: 301-snapshot-fio with 12 rounds per format (CI runs one). A sparse tail's truncate
# that cut a concurrent extending write failed about one VDI round in six under load (12 of 72). Run it with
#   VM_EXTRA_TESTS=selftests/vm/extra-stress selftests/vm/run.sh --kernel 6.12.95+deb12-amd64 --timeout 2700 --filter '^305-'
# SNAPFIO_FORMATS=vdi in a copy of this file narrows it to one format.
# timeout: 2400
SNAPFIO_ROUNDS=12
. /vmtest/tests/301-snapshot-fio.sh
