#!/usr/bin/env python3
"""The worst-case stack depth of a thread from the call graph of a linked RIOT image.

    tests/riot/stack_depth.py ELF [ENTRY]     (ENTRY: a symbol, default main_trampoline)

For a board jeton cannot be run on here (the Cortex-M boards), this is how the main thread's
stack is sized (riot-sys-config/README.md, "Stack sizes"). It disassembles ELF with objdump
(arm-none-eabi-objdump for ARM images), takes each function's frame from its prologue
(Thumb-2: push/stmdb, vpush, sub sp; x86-64: pushes, sub rsp and the return address) and its
callees from direct calls and tail jumps (bl, b.w, call, jmp to a function's start), and
prints the deepest path from ENTRY with each function's frame.

What it does not see: calls through function pointers and trait objects (formatting, RIOT's
callbacks) and recursion (a call back into the path is cut); interrupts run on their own
stack on Cortex-M. On native64 its bound for the event loop was 46,888 bytes where `ps`
measured 45,960 at the peak of the Matrix scenario.
"""

import re
import subprocess
import sys

HEADER = re.compile(r"^([0-9a-f]+) <(.*)>:$")
DIRECT = re.compile(r"^[0-9a-f]+ <(.*)>$")
INSIDE = re.compile(r"\+0x[0-9a-f]+$")  # a jump within a function, not a call


def registers(operand: str) -> int:
    """How many registers a {r4-r7, lr} style list names."""
    inside = operand[operand.index("{") + 1 : operand.index("}")]
    count = 0
    for item in inside.split(","):
        item = item.strip()
        if "-" in item:
            first, last = item.split("-")
            count += int(last[1:]) - int(first[1:]) + 1
        else:
            count += 1
    return count


def thumb_frame(op: str, args: str) -> int:
    if op.startswith("push") or (op.startswith("stmdb") and args.startswith("sp!")):
        return 4 * registers(args)
    if op.startswith("vpush") or (op.startswith("vstmdb") and args.startswith("sp!")):
        return (8 if "{d" in args else 4) * registers(args)
    if op in ("sub", "sub.w", "subw") and args.startswith("sp, "):
        immediate = re.search(r"#(\d+)", args)
        return int(immediate.group(1)) if immediate else 0
    return 0


def x86_frame(op: str, args: str) -> int:
    if op == "push":
        return 8
    if op == "sub" and args.endswith(",%rsp"):
        immediate = re.match(r"\$0x([0-9a-f]+),%rsp", args)
        return int(immediate.group(1), 16) if immediate else 0
    return 0


def call_graph(elf: str):
    header = subprocess.run(["readelf", "-h", elf], capture_output=True, text=True, check=True)
    arm = "ARM" in header.stdout
    objdump = "arm-none-eabi-objdump" if arm else "objdump"
    listing = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", "-C", elf],
        capture_output=True, text=True, check=True,
    ).stdout
    frames, callees = {}, {}
    function = None
    for line in listing.splitlines():
        start = HEADER.match(line)
        if start:
            function = start.group(2)
            frames[function] = 0 if arm else 8  # x86-64: the return address
            callees[function] = set()
            continue
        fields = line.split("\t")
        if function is None or len(fields) < 2:
            continue
        op, args = fields[1].strip(), fields[2].strip() if len(fields) > 2 else ""
        if not arm and " " in op:  # objdump puts x86 operands after spaces
            op, args = op.split(None, 1)
        frames[function] += thumb_frame(op, args) if arm else x86_frame(op, args)
        if op in ("bl", "b.w", "b", "call", "jmp"):
            target = DIRECT.match(args)
            if target and not INSIDE.search(target.group(1)):
                callees[function].add(target.group(1))
    return frames, callees


def deepest(frames, callees, entry):
    sys.setrecursionlimit(100_000)
    memo = {}

    def walk(function, path):
        if function in memo:
            return memo[function]
        depth, chain = 0, []
        for callee in callees.get(function, ()):
            if callee in path or callee == function:
                continue
            below = walk(callee, path | {function})
            if below[0] > depth:
                depth, chain = below
        memo[function] = (frames.get(function, 0) + depth, [function] + chain)
        return memo[function]

    return walk(entry, frozenset())


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    elf = sys.argv[1]
    entry = sys.argv[2] if len(sys.argv) == 3 else "main_trampoline"
    frames, callees = call_graph(elf)
    if entry not in frames:
        print(f"{elf} has no function {entry}", file=sys.stderr)
        return 1
    depth, chain = deepest(frames, callees, entry)
    print(f"stack: {depth} bytes worst case from {entry} (direct calls)")
    for function in chain:
        print(f"  {frames[function]:6d}  {function[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
