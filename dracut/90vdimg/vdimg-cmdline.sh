#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# dracut cmdline hook: when the command line has vdimg.image=, queue the attach as a one-time job
# that runs once udev has settled (the host disk is then usually there; vdimg-boot itself waits,
# bounded, for it). The job is written here rather than with /sbin/initqueue, which does not
# keep its arguments quoted: the main loop sources it, so a failure calls dracut's die in the
# init process with the one line "vdimg: ..." (with rd.shell: the emergency shell).

type getargs >/dev/null 2>&1 || . /lib/dracut-lib.sh

if [ -n "$(getargs vdimg.image=)" ]; then
    mkdir -p "$hookdir/initqueue/settled"
    cat >"$hookdir/initqueue/settled/90-vdimg-attach.sh" <<'JOB'
[ -e "$job" ] && rm -f -- "$job"
if ! vdimg_msg=$(/usr/lib/vdimg/vdimg-boot); then
    die "${vdimg_msg:-vdimg: attaching the boot image failed}"
fi
JOB
    : >>"$hookdir/initqueue/work"
fi
