#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn the serial console of one VM test run into a KTAP subtree and counts.

    ktap.py --number K --name NAME [--result STATUS NAME [FILE]]... [--vm-status RC]
            [--died-console FIRST_CONSOLE_LOG] --counts FILE CONSOLE_LOG
    ktap.py --emulator-fault CONSOLE_LOG

Reads the KTAP the guest printed between the VMTEST-KTAP markers (tolerating kernel-message prefixes
and lines broken by them). When the markers are missing (the VM panicked or was killed), it rebuilds
what it can from the "# vmtest-begin/end/plan" progress lines and fails the test that was running
and every test that never ran. It also fails the run when the console anywhere shows a kernel splat
(BUG, WARNING:, Oops, KASAN, lockdep, hung task, kmemleak). --result adds host-side results (the
module build...) before the guest's. Prints the subtree at indent 4 ending with "ok K - NAME" and
writes "PASSED FAILED SKIPPED" (leaf results: sub-tests, or the test itself when it has none) to
--counts.

A guest can die of a fault of the emulator (TCG) rather than of its kernel: a double fault whose
saved CPU state is garbage (EFLAGS holding pointer bits), with no stack overflow behind it, has
been seen on a loaded host in the stock kernel's allocator. --emulator-fault says whether a
console that died mid-test shows one: exit 0, printing a regular expression of the tests that
finished (run.sh boots once more with them skipped, VMTEST_SKIP), or exit 1. --died-console then
names that first console: its finished tests come first, its kernel log is checked up to the
fault, and a diagnostic names the test it died in (which the second boot ran again).
"""
import argparse
import re
import sys

BAD_RE = re.compile(
    r'(^|[^A-Za-z_])BUG([: ]|$)|WARNING:|Oops|KASAN|UBSAN:|KFENCE:|general protection fault'
    r'|possible circular locking|possible recursive locking|(^|\] |rcu: )INFO: |suspected memory leak'
    r'|unreferenced object|Kernel panic|list_(add|del) corruption|refcount_t: ')
STAMP_RE = re.compile(r'\[\s*\d+\.\d+\]\s?')
RESULT_RE = re.compile(r'( *)(not ok|ok) (\d+)(?: -)? ?(.*)$')
PLAN_RE = re.compile(r'^\s*1\.\.(\d+)\s*$')
DOUBLE_FAULT_RE = re.compile(r'PANIC: double fault')
# a double fault that is the kernel's own: its stack overflowed (VMAP_STACK's guard page)
STACK_OVERFLOW_RE = re.compile(r'stack guard page|kernel stack overflow')


class Test:
    def __init__(self, ok, name, directive='', diag=None, subs=None):
        self.ok = ok
        self.name = name
        self.directive = directive  # text after '#'
        self.diag = diag or []
        self.subs = subs or []      # list of (ok, name, directive)

    @property
    def skipped(self):
        return self.ok and self.directive.upper().startswith('SKIP')


def split_directive(text):
    if ' # ' in text:
        name, d = text.split(' # ', 1)
        return name.strip(), d.strip()
    return text.strip(), ''


def clean(line):
    line = line.rstrip('\r\n').replace('\r', '')
    # a kernel message can precede (or interrupt) a line of ours: drop its timestamped part
    m = None
    for m in STAMP_RE.finditer(line):
        pass
    if m and m.start() == 0:
        line = line[m.end():]
    return line


def parse_block(lines):
    """KTAP between the markers -> (plan, [Test])."""
    plan = None
    tests = []
    pend_diag, pend_subs = [], []
    for raw in lines:
        line = clean(raw)
        if PLAN_RE.match(line) and not line.startswith(' '):
            plan = int(PLAN_RE.match(line).group(1))
            continue
        m = RESULT_RE.search(line)
        if m and (m.start() == 0 or line[:m.start()].strip() == '' or not line.lstrip().startswith('#')):
            indent = len(m.group(1))
            ok = m.group(2) == 'ok'
            name, directive = split_directive(m.group(4))
            if indent > 0:
                pend_subs.append((ok, name, directive))
            else:
                tests.append(Test(ok, name, directive, pend_diag, pend_subs))
                pend_diag, pend_subs = [], []
            continue
        s = line.strip()
        if s.startswith('#'):
            pend_diag.append(s[1:].strip())
    return plan, tests


def parse_progress(lines):
    """No KTAP block: results from the progress lines, the running test failed."""
    plan = None
    started, ended = {}, {}
    for raw in lines:
        line = clean(raw)
        m = re.search(r'# vmtest-plan (\d+)', line)
        if m:
            plan = int(m.group(1))
        m = re.search(r'# vmtest-begin (\d+) (\S+)', line)
        if m:
            started[int(m.group(1))] = m.group(2)
        m = re.search(r'# vmtest-end (\d+) (\S+) (ok|not ok) ?(.*)', line)
        if m:
            ended[int(m.group(1))] = (m.group(2), m.group(3) == 'ok', m.group(4))
    return plan, started, ended


def emulator_fault(lines):
    """The index of the line where an emulator's double fault killed the guest, or None."""
    text = '\n'.join(lines)
    if STACK_OVERFLOW_RE.search(text):
        return None
    for i, raw in enumerate(lines):
        if DOUBLE_FAULT_RE.search(raw):
            return i
    return None


def read_console(path):
    with open(path, 'rb') as f:
        return f.read().decode('utf-8', 'replace').split('\n')


def excerpt(lines, idx, before=3, after=30):
    return [clean(x) for x in lines[max(0, idx - before):idx + after]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--emulator-fault', action='store_true')
    ap.add_argument('--died-console')
    ap.add_argument('--number', type=int)
    ap.add_argument('--name')
    ap.add_argument('--result', nargs='+', action='append', default=[],
                    metavar=('STATUS', 'NAME'))
    ap.add_argument('--vm-status', type=int, default=0)
    ap.add_argument('--vm-timeout', type=int, default=0)
    ap.add_argument('--counts')
    ap.add_argument('console')
    a = ap.parse_args()

    lines = read_console(a.console)
    if a.emulator_fault:
        if emulator_fault(lines) is None:
            return 1
        _, _, ended = parse_progress(lines)
        names = sorted({name for name, _, _ in ended.values()})
        print(f'^({"|".join(names)})$' if names else '')
        return 0
    if a.number is None or a.name is None or a.counts is None:
        ap.error('--number, --name and --counts are required')

    # the first boot's finished tests, when it died of the emulator's fault (see above)
    prior, notes, died_bad = [], [], []
    if a.died_console:
        dlines = read_console(a.died_console)
        fault = emulator_fault(dlines)
        if fault is None:
            fault = len(dlines)
        _, dstarted, dended = parse_progress(dlines[:fault])
        for n in sorted(dended):
            name, ok, why = dended[n]
            prior.append(Test(ok, name, '' if ok else why))
        dying = [dstarted[n] for n in dstarted if n not in dended]
        notes.append(f'the first VM died of a double fault (an emulator fault, see ktap.py) during '
                     f'{dying[0] if dying else "no test"}; a second VM ran it and the tests after it')
        notes += [clean(x) for x in dlines[fault:fault + 8]]
        died_bad = [i for i, raw in enumerate(dlines[:fault]) if BAD_RE.search(clean(raw))]

    tests = []
    for r in a.result:
        status, name = r[0], r[1]
        diag = []
        if len(r) > 2:
            try:
                with open(r[2], errors='replace') as f:
                    diag = [x.rstrip('\n') for x in f.readlines()[-60:]]
            except OSError:
                pass
        if status.startswith('skip'):
            tests.append(Test(True, name, 'SKIP ' + status.partition(':')[2], diag))
        else:
            tests.append(Test(status == 'ok', name, '', diag if status != 'ok' else []))

    begin = end = None
    for i, raw in enumerate(lines):
        if 'VMTEST-KTAP-BEGIN' in raw:
            begin, end = i, None
        elif 'VMTEST-KTAP-END' in raw and begin is not None:
            end = i
    guest = []
    if begin is not None and end is not None:
        plan, guest = parse_block(lines[begin + 1:end])
        if plan is None:
            guest.append(Test(False, 'ktap-plan', '', ['the guest printed no test plan']))
        elif plan != len(guest):
            guest.append(Test(False, 'ktap-plan', '',
                              [f'plan 1..{plan} but {len(guest)} results']))
    else:
        plan, started, ended = parse_progress(lines)
        tail = [clean(x) for x in lines[-40:]]
        if plan is None:
            guest.append(Test(False, 'boot', 'the VM never reached the tests', tail))
        else:
            for n in range(1, plan + 1):
                if n in ended:
                    name, ok, why = ended[n]
                    guest.append(Test(ok, name, '' if ok else why))
                elif n in started:
                    guest.append(Test(False, started[n], 'the VM died or hung during this test',
                                      tail))
                else:
                    guest.append(Test(False, f'test-{n}', 'not run: the VM died earlier'))
    tests.extend(prior)
    tests.extend(guest)

    if a.vm_status == 124:
        tests.append(Test(False, 'vm-timeout', '',
                          [f'the VM did not power off within {a.vm_timeout} s and was killed']))
    elif a.vm_status not in (0,):
        tests.append(Test(False, 'vm-exit', '', [f'qemu exited with status {a.vm_status}']))

    bad = [i for i, raw in enumerate(lines) if BAD_RE.search(clean(raw))
           and not (begin is not None and end is not None and begin < i < end)]
    if bad or died_bad:
        diag = []
        for i in bad[:5]:
            diag += excerpt(lines, i) + ['---']
        for i in died_bad[:5]:
            diag += ['(the first VM)'] + excerpt(dlines, i) + ['---']
        tests.append(Test(False, 'console-kernel-log', '', diag))
    else:
        tests.append(Test(True, 'console-kernel-log'))

    passed = failed = skipped = 0
    out = ['    KTAP version 1', f'    # {a.name}'] + ['    # ' + x for x in notes]
    out.append(f'    1..{len(tests)}')
    for n, t in enumerate(tests, 1):
        sub_fail = False
        if t.subs:
            out.append('        KTAP version 1')
            out.append(f'        1..{len(t.subs)}')
            for k, (ok, name, d) in enumerate(t.subs, 1):
                out.append(f'        {"ok" if ok else "not ok"} {k} - {name}' + (f' # {d}' if d else ''))
                if ok and d.upper().startswith('SKIP'):
                    skipped += 1
                elif ok:
                    passed += 1
                else:
                    failed += 1
                    sub_fail = True
        if not t.subs or (not t.ok and not sub_fail):
            if t.skipped:
                skipped += 1
            elif t.ok:
                passed += 1
            else:
                failed += 1
        if not t.ok or t.skipped:
            out += ['    # ' + d for d in t.diag]
        out.append(f'    {"ok" if t.ok else "not ok"} {n} - {t.name}' +
                   (f' # {t.directive}' if t.directive else ''))
    kernel_ok = all(t.ok for t in tests)
    out.append(f'{"ok" if kernel_ok else "not ok"} {a.number} - {a.name}')
    print('\n'.join(out))
    with open(a.counts, 'w') as f:
        f.write(f'{passed} {failed} {skipped}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
