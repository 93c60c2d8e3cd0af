"""Makes a measured tuning variant the code: resolves `#ifdef M` / `#ifndef M` / `#else` /
`#endif` for the macros named, in place, and leaves every other preprocessor line alone.

    python scripts/unifdef.py -DGN_TEAM_LEAN -UGN_FWD_LN1 csrc/cuda/*.cu csrc/cuda/*.cuh
    python scripts/unifdef.py --check -DGN_TEAM_LEAN ...   # exit 1 if a file would change

-DM: M is defined (its #ifdef blocks stay, their #else parts go); -UM: M is not. A variant
is finalised when the rewritten default build's PTX equals the measured build's (`nvcc
-ptx` of each file, with and without the flags; docs/testing.md). Only the bare
`#ifdef M` / `#ifndef M` forms are understood: a `#if` naming one of the macros is an
error, not a guess.
"""
import argparse
import re
import sys

DIRECTIVE = re.compile(r"^\s*#\s*(ifdef|ifndef|if|elif|else|endif)\b\s*(\w*)")


def resolve(lines, defined, undefined, path):
    out = []
    stack = []  # per open #if: (ours, keep-this-branch, keep-parent)
    keep = True
    for n, line in enumerate(lines, 1):
        m = DIRECTIVE.match(line)
        if m:
            kind, name = m.group(1), m.group(2)
            if kind in ("ifdef", "ifndef") and name in defined | undefined:
                on = (name in defined) == (kind == "ifdef")
                stack.append((True, on, keep))
                keep = keep and on
                continue
            if kind in ("if", "elif") and any(re.search(rf"\b{re.escape(x)}\b", line) for x in defined | undefined):
                sys.exit(f"{path}:{n}: only #ifdef / #ifndef of the named macros are resolved: {line.strip()}")
            if kind in ("if", "ifdef", "ifndef"):
                stack.append((False, True, keep))
            elif kind == "else" and stack and stack[-1][0]:
                ours, on, parent = stack[-1]
                stack[-1] = (True, not on, parent)
                keep = parent and not on
                continue
            elif kind == "elif" and stack and stack[-1][0]:
                sys.exit(f"{path}:{n}: #elif after a resolved #ifdef")
            elif kind == "endif":
                if not stack:
                    sys.exit(f"{path}:{n}: #endif without #if")
                ours, _, parent = stack.pop()
                if ours:
                    keep = parent
                    continue
        if keep:
            out.append(line)
    if stack:
        sys.exit(f"{path}: unterminated #if")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-D", action="append", default=[], dest="defined", metavar="MACRO")
    ap.add_argument("-U", action="append", default=[], dest="undefined", metavar="MACRO")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    changed = []
    for path in a.files:
        text = open(path).read()
        new = "".join(resolve(text.splitlines(keepends=True), set(a.defined), set(a.undefined), path))
        if new != text:
            changed.append(path)
            if not a.check:
                open(path, "w").write(new)
    for p in changed:
        print(("would change " if a.check else "rewrote ") + p)
    sys.exit(1 if a.check and changed else 0)


if __name__ == "__main__":
    main()
