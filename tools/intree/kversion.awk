# SPDX-License-Identifier: GPL-2.0
#
# awk -v kv=KERNEL_VERSION_CODE -f kversion.awk compat.h: resolve the kernel version tests of
# include/vdimg/compat.h for one kernel, for a copy inside that kernel's tree (add-to-kernel.sh).
# "#if LINUX_VERSION_CODE >= KERNEL_VERSION(a, b, c)" blocks (with an optional #else) keep only
# the branch that kernel takes, their directives go, and so does <linux/version.h>; every other
# line and directive is kept; runs of blank lines left behind become one. Any other use of
# LINUX_VERSION_CODE is an error (exit 1), so a new form of test is never copied unresolved.
function emitting(   i) {
	for (i = 1; i <= depth; i++)
		if (ver[i] && !keep[i])
			return 0
	return 1
}
function put(line) {
	if (!emitting())
		return
	if (line == "" && blank)
		return
	blank = line == ""
	print line
}
{
	if (match($0, /^#if LINUX_VERSION_CODE >= KERNEL_VERSION\( *[0-9]+, *[0-9]+, *[0-9]+\) *$/)) {
		split($0, n, /[^0-9]+/)
		# n[1] is empty (the text before the first digit)
		want = n[2] * 65536 + n[3] * 256 + (n[4] > 255 ? 255 : n[4])
		depth++
		ver[depth] = 1
		keep[depth] = kv >= want
		next
	}
	if ($0 ~ /LINUX_VERSION_CODE|KERNEL_VERSION/) {
		printf "%s:%d: a version test kversion.awk cannot resolve: %s\n", FILENAME, FNR, $0 > "/dev/stderr"
		bad = 1
		exit 1
	}
	if ($0 ~ /^#include <linux\/version\.h>/)
		next
	if ($0 ~ /^#if/) {
		depth++
		ver[depth] = 0
		put($0)
		next
	}
	if ($0 ~ /^#el/ && depth && ver[depth]) {
		if ($0 !~ /^#else/) {
			printf "%s:%d: #elif in a version test\n", FILENAME, FNR > "/dev/stderr"
			bad = 1
			exit 1
		}
		keep[depth] = !keep[depth]
		next
	}
	if ($0 ~ /^#endif/) {
		if (!depth) {
			printf "%s:%d: #endif without #if\n", FILENAME, FNR > "/dev/stderr"
			bad = 1
			exit 1
		}
		was = ver[depth]
		depth--
		if (!was)
			put($0)
		next
	}
	put($0)
}
END {
	if (!bad && depth) {
		printf "%s: an #if is not closed\n", FILENAME > "/dev/stderr"
		exit 1
	}
}
