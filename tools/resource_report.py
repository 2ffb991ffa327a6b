#!/usr/bin/env python3
"""Kernel resource report: registers, spills, shared memory and stack of every kernel built
by the cuda preset, for each architecture.

Registers, static shared memory and stack come from the built cubins (cuobjdump
--dump-resource-usage on every program in the build tree: the kernel lab, the examples and
milmer-parity, which together instantiate every kernel); spill bytes come from ptxas's own
report in the build log (the cuda preset compiles with -Xptxas -v). Exits non-zero when any
kernel spills.

    tools/resource_report.py build/cuda build/cuda/build.log [--markdown out.md]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig


PAGE_INTRO = """# Kernel resource report

Every kernel the `cuda` preset compiles (the kernel lab, the examples and milmer-parity), per
architecture: registers per thread, spill bytes (from ptxas), static shared memory and stack
(from cuobjdump on the built cubins; sm_90 reserves 1 KB of shared memory per block, which
shows as 1024). Regenerate with `make report`; `make test` prints the same table and fails on
any spill. Theoretical occupancy: docs/benchmarks.md.

"""


def find_cuobjdump():
    exe = shutil.which("cuobjdump")
    if exe:
        return exe
    for root in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for sub in ("nvidia/cu13/bin/cuobjdump", "nvidia/cuda_cuobjdump/bin/cuobjdump"):
            path = os.path.join(root, sub)
            if os.path.exists(path):
                return path
    return None


def demangle(names):
    if not names:
        return {}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return dict(zip(names, out.stdout.splitlines()))


def short(name):
    """Drops the argument list of a demangled name; keeps template arguments."""
    depth = 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            return name[:i]
    return name


def cubin_usage(cuobjdump, programs):
    usage = {}
    for prog in programs:
        text = subprocess.run([cuobjdump, "--dump-resource-usage", prog], capture_output=True,
                              text=True).stdout
        arch = None
        for line in text.splitlines():
            m = re.match(r"arch = (sm_\w+)", line.strip())
            if m:
                arch = m.group(1)
            m = re.match(r"\s*Function (\S+):", line)
            if m:
                fn = m.group(1)
                continue
            m = re.match(r"\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
            if m and arch:
                # A kernel compiled into several programs: report its largest footprint.
                new = dict(reg=int(m.group(1)), stack=int(m.group(2)), shared=int(m.group(3)),
                           local=int(m.group(4)))
                old = usage.get((fn, arch), new)
                usage[(fn, arch)] = {k: max(old[k], new[k]) for k in new}
    return usage


def ptxas_spills(log):
    spills = {}
    fn = arch = None
    for line in open(log, errors="replace"):
        m = re.search(r"Compiling entry function '(\S+)' for '(sm_\w+)'", line)
        if m:
            fn, arch = m.group(1), m.group(2)
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and fn:
            spills[(fn, arch)] = int(m.group(1)) + int(m.group(2))
    return spills


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir")
    ap.add_argument("build_log")
    ap.add_argument("--markdown", help="also write the table as markdown to this file")
    args = ap.parse_args()

    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        sys.exit("resource_report: cuobjdump not found (tools/install_deps.sh installs it)")
    programs = []
    for root, _, files in os.walk(args.build_dir):
        if "CMakeFiles" in root:
            continue
        for f in files:
            p = os.path.join(root, f)
            if os.access(p, os.X_OK) and not os.path.splitext(f)[1] and os.path.isfile(p):
                programs.append(p)
    usage = cubin_usage(cuobjdump, sorted(programs))
    spills = ptxas_spills(args.build_log)
    if not usage:
        sys.exit("resource_report: no kernels found in the cubins of " + args.build_dir)
    names = demangle(sorted({fn for fn, _ in usage}))
    rows = []
    for (fn, arch), u in sorted(usage.items(), key=lambda kv: (short(names[kv[0][0]]), kv[0][1])):
        rows.append((short(names[fn]), arch, u["reg"], spills.get((fn, arch), "?"), u["shared"],
                     u["stack"]))
    header = ("kernel", "arch", "registers", "spill bytes", "static smem", "stack")
    width = max(len(r[0]) for r in rows)
    print(f"{header[0]:<{width}}  {header[1]:<6} {header[2]:>9} {header[3]:>11} "
          f"{header[4]:>11} {header[5]:>6}")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:<6} {r[2]:>9} {r[3]:>11} {r[4]:>11} {r[5]:>6}")
    spilling = [r for r in rows if r[3] not in (0, "?")]
    print(f"resource report: {len(rows)} kernel builds, {len(spilling)} with spills")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(PAGE_INTRO)
            f.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
            for r in rows:
                f.write("| " + " | ".join(str(c) for c in r) + " |\n")
    sys.exit(1 if spilling else 0)


if __name__ == "__main__":
    main()
