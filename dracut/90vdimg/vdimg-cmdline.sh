#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# dracut cmdline hook: when the command line has vdimg.image=, queue the attach as a one-time
# job that runs once udev has settled (the host disk is then usually there; vdimg-boot itself
# waits, bounded, for it). A failure stops the boot with dracut's die and the one line
# "vdimg: ..." (with rd.shell: the emergency shell).

type getargs >/dev/null 2>&1 || . /lib/dracut-lib.sh

if [ -n "$(getargs vdimg.image=)" ]; then
    /sbin/initqueue --settled --onetime --unique --name vdimg-attach \
        /bin/sh -c 'msg=$(/usr/lib/vdimg/vdimg-boot) || { . /lib/dracut-lib.sh; die "${msg:-vdimg: attaching the boot image failed}"; }'
fi
