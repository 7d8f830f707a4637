#!/usr/bin/env python3
"""Writes client/used_text.ld: the linker places first, together, the code certcast-client runs.

    bench/client_text_order.py --map=MAP --binary=BIN --out=LD CALLGRIND_OUT...

CALLGRIND_OUT are `valgrind --tool=callgrind --dump-instr=yes` profiles of BIN (start, connect,
write a version, idle; bench/client_text_order.sh makes them), MAP is BIN's GNU ld map
(-Wl,-Map). Every input section of BIN's code that holds an executed instruction is listed in
an output section `.text.used` that the script inserts before `.text`: first what the first
profile ran, then what only the second ran, and so on (so a plaintext client does not map the
TLS code), each part in the sections' current order.

Why (bench/README.md, "The client's memory"): the kernel maps a file's page cache around each
page fault (64 KiB here), so code spread thinly over the binary's 7.5 MB of text was almost all
resident although the client runs ~3.5 MB of it. Debian's archives are built without
-ffunction-sections, so the unit is an object file's .text (or a function of its own where the
compiler gave it a section: inline functions, certcast's own code).
"""

import argparse
import bisect
import re
import subprocess
import sys

# Sections named after their object's role, not a function: matched per archive member.
PER_OBJECT = {".text", ".text.unlikely", ".text.startup", ".text.hot", ".text.exit"}


def executed_addresses(path, binary_suffix):
    """Instruction addresses of `binary_suffix`'s object in a callgrind profile, and main's."""
    addresses, main_at = set(), None
    names, obj, fn, pos = {}, None, None, 0

    def resolve(kind, value):
        m = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not m:
            return value
        if m.group(2):
            names[(kind, m.group(1))] = m.group(2)
        return names.get((kind, m.group(1)), m.group(1))

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            key, _, value = line.partition("=")
            if key in ("ob", "cob"):
                resolved = resolve("ob", value)
                if key == "ob":
                    obj = resolved
                continue
            if key in ("fn", "cfn"):
                resolved = resolve("fn", value)
                if key == "fn":
                    fn = resolved
                continue
            if key in ("fl", "fi", "fe", "cfi", "cfl"):
                resolve("fl", value)
                continue
            if key == "calls" or line[0] not in "0123456789+-*":
                continue
            token = line.split()[0]
            if token.startswith("0x"):
                pos = int(token, 16)
            elif token[0] in "+-":
                step = int(token[1:], 16) if token[1:].startswith("0x") else int(token[1:])
                pos += step if token[0] == "+" else -step
            elif token != "*":
                continue
            if obj is not None and obj.endswith(binary_suffix):
                addresses.add(pos)
                if fn == "main" and main_at is None:
                    main_at = pos
    return addresses, main_at


def code_sections(map_path):
    """(start, size, file, section name) of every input section in the map's code sections."""
    sections, out, pending = [], None, None
    entry = re.compile(r"^ (\.text\S*)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(.*)$")
    wrapped = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
    with open(map_path, errors="replace") as f:
        for line in f:
            m = re.match(r"^(\.\S+)", line)
            if m:
                out = m.group(1)
            if out != ".text":
                continue
            m = entry.match(line)
            if m:
                sections.append((int(m.group(2), 16), int(m.group(3), 16), m.group(4).strip(),
                                 m.group(1)))
                pending = None
                continue
            m = re.match(r"^ (\.text\S*)\s*$", line)
            if m:
                pending = m.group(1)
                continue
            m = wrapped.match(line)
            if m and pending:
                sections.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3).strip(),
                                 pending))
                pending = None
    return sorted(s for s in sections if s[1] > 0)


def file_pattern(file):
    """The linker-script file pattern for an object in the map: `archive(member)` or a path."""
    if file.endswith(")") and "(" in file:
        archive, member = file[:-1].split("(", 1)
        return f"*{archive.rsplit('/', 1)[-1]}:{member}"
    return f"*{file.rsplit('/', 1)[-1]}"


def code_pattern(file, name):
    """The input-section pattern for one code section of one file."""
    if name in PER_OBJECT:
        return f"{file_pattern(file)}({name})"
    return f"*({name})"  # a function's own section: its name is unique enough


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", required=True)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("profiles", nargs="+")
    opts = parser.parse_args()

    symbols = subprocess.run(["nm", "--defined-only", opts.binary], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    main_link = [int(s.split()[0], 16) for s in symbols if s.split()[-1] == "main"]
    sections = code_sections(opts.map)
    starts = [s[0] for s in sections]
    order = []  # section indexes: the first profile's in address order, then the next's new ones
    for profile in opts.profiles:
        addresses, main_at = executed_addresses(profile, opts.binary.rsplit("/", 1)[-1])
        if main_at is None or not main_link:
            sys.exit(f"no main() in {profile} or in {opts.binary}: wrong binary or profile?")
        load_base = main_at - main_link[0]
        ran = set()
        for address in addresses:
            i = bisect.bisect_right(starts, address - load_base) - 1
            if i >= 0 and address - load_base < sections[i][0] + sections[i][1]:
                ran.add(i)
        order += sorted(ran - set(order))
    lines = list(dict.fromkeys(code_pattern(sections[i][2], sections[i][3]) for i in order))
    used_bytes = sum(sections[i][1] for i in order)
    all_bytes = sum(s[1] for s in sections)
    # The read-only data of the same files, in the same order: code that ran reads its own
    # tables and strings; files none of whose code ran seldom have theirs read.
    files = dict.fromkeys(sections[i][2] for i in order)
    data_lines = [f"{file_pattern(file)}(.rodata .rodata.*)" for file in files]
    with open(opts.out, "w") as out:
        out.write(
            "/* Generated by bench/client_text_order.sh (bench/client_text_order.py).\n"
            "   The code certcast-client ran, and the .rodata of the same files, placed first and\n"
            "   together, so that the page cache the kernel maps around each fault is what the\n"
            f"   client uses: {len(order)} input sections, {used_bytes // 1024} KiB of "
            f"{all_bytes // 1024} KiB of code.\n"
            "   A line that no longer matches is ignored by the linker; tests/static_client\n"
            "   checks that .text.used still holds most of it. */\n"
            "SECTIONS\n{\n  .text.used :\n  {\n")
        out.writelines(f"    {line}\n" for line in lines)
        out.write("  }\n}\nINSERT BEFORE .text;\nSECTIONS\n{\n  .rodata.used :\n  {\n")
        out.writelines(f"    {line}\n" for line in data_lines)
        out.write("  }\n}\nINSERT BEFORE .rodata;\n")
    print(f"{opts.out}: {len(lines)} patterns, {len(order)} of {len(sections)} input sections, "
          f"{used_bytes // 1024} of {all_bytes // 1024} KiB of code")


if __name__ == "__main__":
    main()
