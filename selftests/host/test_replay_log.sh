#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host tests of selftests/vm/replay-log (the dm-log-writes replayer of VM test 340-log-writes),
# built here with ASan/UBSan: on logs written by a small Python model of the kernel's format, --list
# and --marks show every entry; a replay stops after the next FLUSH/FUA (--until-flush), at a point
# (--until-point), at a mark, at an entry number, resumes from its state file and ends with status 3
# when the stop asked for is not in the log; the target holds exactly the data written (discards as
# zeros); one pass with stops equals a replay in one go. Hostile logs and state files are refused
# with status 1 and a message: bad magic, version, sector size, more entries than fit, data past
# the log's end, a write past the target's end, unknown flags, a mark with data sectors or an
# overlong name, inline data, a state file pointing outside the log. KTAP on stdout.
set -u
. "$(dirname "$0")/cli_lib.sh"
echo "KTAP version 1"
if ! command -v python3 >/dev/null || ! command -v gcc >/dev/null; then
	echo "1..0 # SKIP python3 or gcc missing"
	exit 4
fi
R=$T/replay-log
if ! gcc -O1 -g -Wall -Wextra -Werror -fsanitize=address,undefined -fno-sanitize-recover=all \
	-o "$R" "$ROOT/selftests/vm/replay-log.c" 2>"$T/err"; then
	ok 1 "replay-log builds"
	ktap_end
	exit 1
fi

# mklog OUT [MUTATION]: a log with sector size 512: a 2-sector write at sector 2 ("A"), a FLUSH, the
# mark m1, a FUA write at 10 ("B"), a discard of sector 2, a 1-sector write at 3 ("C"), the mark
# m2; MUTATION (python statements on bytearray d, with sb/e(i) the offsets of the super and of
# entry i) damages it
mklog() {
	python3 - "$1" "${2:-}" <<'EOF'
import struct, sys
ss = 512
ents = [(2, 2, 0, b"", b"A"), (0, 0, 1, b"", b""), (0, 0, 8, b"m1", b""), (10, 1, 2, b"", b"B"),
        (2, 1, 4, b"", b""), (3, 1, 0, b"", b"C"), (0, 0, 8, b"m2", b"")]
d = bytearray(struct.pack("<QQQI", 0x6a736677736872, 1, len(ents), ss).ljust(ss, b"\0"))
offs = []
for sec, nr, fl, name, fill in ents:
    offs.append(len(d))
    d += struct.pack("<QQQQ", sec, nr, fl, len(name)) + name
    d = d.ljust(len(d) + ss - len(d) % ss if len(d) % ss else len(d), b"\0")
    if not fl & 4:
        d += fill * (nr * ss)
sb = 0
e = lambda i: offs[i]
le64 = lambda v: struct.pack("<Q", v)
exec(sys.argv[2])
open(sys.argv[1], "wb").write(d)
EOF
}

# expect TARGET: the target after the whole log, built independently
expect() {
	python3 - "$1" <<'EOF'
import sys
t = bytearray(8192)
t[1024:2048] = b"A" * 1024
t[5120:5632] = b"B" * 512
t[1024:1536] = bytes(512)
t[1536:2048] = b"C" * 512
open(sys.argv[1], "wb").write(t)
EOF
}

mklog "$T/good.log"
expect "$T/want"
"$R" --log "$T/good.log" --list >"$T/out" 2>"$T/err"
ok $(( $? != 0 || $(wc -l <"$T/out") != 7 )) "--list shows the 7 entries"
"$R" --log "$T/good.log" --marks >"$T/out" 2>"$T/err"
printf '%s\n' "1 @2048 sector 0 len 0 FLUSH" "2 @2560 sector 0 len 0 MARK m1" \
	"3 @3072 sector 10 len 1 FUA" "6 @5632 sector 0 len 0 MARK m2" >"$T/exp"
diff "$T/exp" "$T/out" >"$T/diff"
ok $? "--marks shows the flush, the FUA write and the marks with their offsets"

# one pass with stops
truncate -s 8192 "$T/tgt"
st=$T/state
"$R" --log "$T/good.log" --replay "$T/tgt" --state "$st" --until-flush >"$T/out" 2>"$T/err"
ok $(( $? != 0 )) "--until-flush stops with status 0"
grep -q '^stop entry=2 next=2560 flags=FLUSH last_mark=-$' "$T/out"
ok $? "... after the flush (entry 2), before any mark"
cmp -s -n 2048 "$T/tgt" <(head -c 1024 /dev/zero; head -c 1024 /dev/zero | tr '\0' A)
ok $? "... with the first write applied"
"$R" --log "$T/good.log" --replay "$T/tgt" --state "$st" --until-point >"$T/out" 2>"$T/err"
grep -q '^stop entry=3 .*flags=MARK last_mark=m1$' "$T/out"
ok $? "--until-point resumes from the state file and stops at the mark m1"
"$R" --log "$T/good.log" --replay "$T/tgt" --state "$st" --until-flush >"$T/out" 2>"$T/err"
grep -q '^stop entry=4 .*flags=FUA last_mark=m1$' "$T/out"
ok $? "--until-flush stops after a FUA write"
"$R" --log "$T/good.log" --replay "$T/tgt" --state "$st" --until-entry 6 >"$T/out" 2>"$T/err"
grep -q '^stop entry=6 ' "$T/out"
ok $? "--until-entry 6 stops after 6 entries"
"$R" --log "$T/good.log" --replay "$T/tgt" --state "$st" --until-flush >"$T/out" 2>"$T/err"
rc=$?
ok $(( rc != 3 )) "--until-flush with no flush left ends with status 3"
grep -q 'flags=END last_mark=m2$' "$T/out"
ok $? "... having applied the rest (last mark m2)"
cmp -s "$T/tgt" "$T/want" >"$T/diff"
ok $? "the target after the pass with stops holds the expected data (discard as zeros)"
truncate -s 0 "$T/tgt2"
truncate -s 8192 "$T/tgt2"
"$R" --log "$T/good.log" --replay "$T/tgt2" >"$T/out" 2>"$T/err"
ok $(( $? != 0 )) "a replay in one go ends with status 0"
cmp -s "$T/tgt2" "$T/tgt"
ok $? "... and equals the replay with stops"
rm -f "$T/tgt2"
truncate -s 8192 "$T/tgt2"
"$R" --log "$T/good.log" --replay "$T/tgt2" --until-mark m2 >"$T/out" 2>"$T/err"
ok $(( $? != 0 )) "--until-mark m2 finds the mark"
"$R" --log "$T/good.log" --replay "$T/tgt2" --until-mark nosuch >"$T/out" 2>"$T/err"
ok $(( $? != 3 )) "--until-mark of a mark not in the log ends with status 3"

# hostile logs: status 1 and a message naming the problem
bad() { # bad NAME MUTATION MESSAGE-REGEX
	mklog "$T/bad.log" "$2"
	truncate -s 0 "$T/tgt3"
	truncate -s 8192 "$T/tgt3"
	"$R" --log "$T/bad.log" --replay "$T/tgt3" >"$T/out" 2>"$T/err"
	local rc=$?
	ok $(( rc != 1 )) "$1: status 1"
	grep -Eq "$3" "$T/err"
	ok $? "$1: the message says '$3'"
}
bad "bad magic" 'd[0] ^= 1' 'bad magic'
bad "version 2" 'd[8:16] = le64(2)' 'unsupported log version 2'
bad "sector size 1000" 'd[24:28] = (1000).to_bytes(4, "little")' 'bad sector size 1000'
bad "sector size 0" 'd[24:28] = bytes(4)' 'bad sector size 0'
bad "2^40 entries" 'd[16:24] = le64(1 << 40)' 'entries cannot fit'
bad "more entries than written" 'd[16:24] = le64(9)' 'past the log|end of the log'
bad "data sectors past the log" 'd[e(0) + 8:e(0) + 16] = le64(1 << 60)' 'run past the log'
bad "sector overflow" 'd[e(0):e(0) + 8] = le64((1 << 64) - 1)' 'overflows'
bad "write past the target" 'd[e(0):e(0) + 8] = le64(15)' 'past the end of'
bad "unknown flags" 'd[e(1) + 16:e(1) + 24] = le64(1 << 7)' 'unknown flags'
bad "mark with data sectors" 'd[e(2) + 8:e(2) + 16] = le64(1)' 'malformed mark'
bad "mark name too long" 'd[e(2) + 24:e(2) + 32] = le64(600)' 'malformed mark'
bad "NUL in a mark name" 'd[e(2) + 33] = 0' 'holds a NUL'
bad "inline data" 'd[e(3) + 24:e(3) + 32] = le64(5)' 'inline data'
bad "truncated log" 'del d[e(3) + 100:]' 'past the log|end of the log|cannot fit'

# a state file is input too
for s in "9 1536 -" "2 1000 -" "2 99999999 -" "x y"; do
	echo "$s" >"$T/st2"
	"$R" --log "$T/good.log" --replay "$T/tgt" --state "$T/st2" --until-flush >"$T/out" 2>"$T/err"
	rc=$?
	ok $(( rc != 1 )) "state file '$s' refused"
done
"$R" --log "$T/good.log" >"$T/out" 2>"$T/err"
ok $(( $? != 2 )) "neither --list nor --replay: usage, status 2"
ktap_end
