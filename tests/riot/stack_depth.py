#!/usr/bin/env python3
"""The worst-case stack of a RIOT thread from the call graph of a linked image.

    tests/riot/stack_depth.py ELF [ENTRY]     (ENTRY: a symbol, default main_trampoline)

For a board jeton cannot be run on here (the Cortex-M boards), this is how the main thread's
stack is sized (riot-sys-config/README.md, "Stack sizes"). It disassembles ELF with objdump
(arm-none-eabi-objdump for ARM images), takes each function's frame from its prologue
(Thumb-2: push/stmdb, vpush, sub sp; x86-64: pushes, sub rsp and the return address) and its
callees, and prints the deepest path from ENTRY with each function's frame, plus what the
thread's stack holds besides the frames of its calls:

- the thread's control block (RIOT carves `thread_t` from the top of the stack it is given)
  and the context a thread switch or an interrupt saves on it: on Cortex-M4F the exception
  frame with the FPU registers (26 words), s16-s31 and r4-r11 with lr (RIOT's PendSV, 25
  words), 8 bytes of alignment; on native64 the `ucontext_t` RIOT keeps at the top of the
  stack, the signal trampoline that enters RIOT's interrupt context from any instruction of
  the thread (17 pushes and a call), and the System V red zone (128 bytes a leaf function
  uses below its stack pointer). The sizes of `thread_t` and `ucontext_t` come from the
  image's DWARF.
- calls through function pointers and trait objects: each indirect call may reach any
  function whose address lies in the image's data (vtables, driver operation tables), except
  the tables of other contexts' entry points (the interrupt vectors; RIOT's shell command
  table, whose commands run on the shell thread). Functions whose address is only taken in
  code (a thread's entry handed to thread_create, a timer's callback) are not followed.

What it does not see, and says so: recursion (a call back into the path is cut, and a
function's depth is computed once, whichever path reached it first), paths into a panic or
a failed assertion (the token stops there), and on native64 the C library behind the PLT.
"""

import bisect
import re
import struct
import subprocess
import sys

HEADER = re.compile(r"^([0-9a-f]+) <(.*)>:$")
DIRECT = re.compile(r"^([0-9a-f]+) <(.*)>$")
INSIDE = re.compile(r"\+0x[0-9a-f]+$")  # a jump within a function, not a call
# Where the token stops: a path into one of these never returns to use more stack.
STOPS = re.compile(
    r"^(core::panicking::|core::panic|core::option::expect_failed|core::result::unwrap_failed"
    r"|core::slice::index::|core::str::slice_error_fail|rust_begin_unwind|core_panic"
    r"|_assert_failure|_assert_panic|__stack_chk_fail|err|errx|verr|verrx|abort|exit|_exit)$"
    r"|^(core::panicking::|core::slice::index::)"
)
# Tables of entry points that run on another stack than the thread's: the interrupt vectors
# (objects named so), RIOT's shell commands (an XFA between two symbols).
VECTORS = re.compile(r"vector")
XFA_TABLES = (("shell_commands_xfa_v2", "shell_commands_xfa_v2_end"),)
INDIRECT = -1  # the node that stands for any indirect call

# What a thread switch or an interrupt saves on a Cortex-M4F thread's stack (bytes): the
# exception frame with the FPU's s0-s15 and fpscr (26 words), RIOT's PendSV saving s16-s31
# (16 words) and r4-r11 with lr (9 words), and the frame's 8-byte alignment.
CORTEX_M4F_CONTEXT = 4 * 26 + 4 * 16 + 4 * 9 + 4
# native64: the System V x86-64 red zone.
X86_64_RED_ZONE = 128


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
        if immediate is None:
            raise ValueError(f"a frame of unknown size: {op} {args}")
        return int(immediate.group(1))
    return 0


def x86_frame(op: str, args: str) -> int:
    if op in ("push", "pushf", "pushq"):
        return 8
    if op == "sub" and args.endswith(",%rsp"):
        immediate = re.match(r"\$0x([0-9a-f]+),%rsp", args)
        if immediate is None:
            raise ValueError(f"a frame of unknown size: {op} {args}")
        return int(immediate.group(1), 16)
    return 0


def is_indirect_call(arm: bool, op: str, args: str) -> bool:
    if arm:
        return op.startswith("blx") and not DIRECT.match(args)
    return op.startswith("call") and args.startswith("*")


class Image:
    """The functions of an ELF image, keyed by their start address: names, frames, direct
    callees, which make indirect calls, which call the C library."""

    def __init__(self, elf: str):
        self.elf = elf
        self.arm = "ARM" in run(["readelf", "-h", elf])
        self.symbols, self.function_ranges, self.other_contexts = symbols(elf)
        self.function_starts = {start for start, _ in self.function_ranges}
        self.sections = sections(elf)
        objdump = "arm-none-eabi-objdump" if self.arm else "objdump"
        self.names, self.frames, self.callees = {}, {}, {}
        self.indirect, self.external = set(), {}
        self.unknown = {}  # function: the instruction that sizes its frame at run time
        function = None
        for line in run([objdump, "-d", "--no-show-raw-insn", "-C", elf]).splitlines():
            start = HEADER.match(line)
            if start:
                function = int(start.group(1), 16)
                self.names[function] = start.group(2)
                self.frames[function] = 0 if self.arm else 8  # x86-64: the return address
                self.callees[function] = set()
                continue
            fields = line.split("\t")
            if function is None or len(fields) < 2:
                continue
            op, args = fields[1].strip(), fields[2].strip() if len(fields) > 2 else ""
            if not self.arm and " " in op:  # objdump puts x86 operands after spaces
                op, args = op.split(None, 1)
            try:
                self.frames[function] += (thumb_frame if self.arm else x86_frame)(op, args)
            except ValueError as err:
                self.unknown[function] = str(err)
            if self.arm:
                self.arm_line(function, op, args)
            else:
                self.x86_line(function, op, args)
        self.plt = {a for a, n in self.names.items() if n.endswith("@plt")}

    def call(self, function: int, target: int) -> None:
        self.callees[function].add(target)

    def arm_line(self, function, op, args) -> None:
        if op in ("bl", "b.w", "b"):
            target = DIRECT.match(args)
            if target and not INSIDE.search(target.group(2)):
                self.call(function, int(target.group(1), 16))
        elif op.startswith("blx") and not DIRECT.match(args):
            self.indirect.add(function)

    def x86_line(self, function, op, args) -> None:
        if op in ("call", "jmp"):
            target = DIRECT.match(args)
            if target and not INSIDE.search(target.group(2)):
                self.call(function, int(target.group(1), 16))
        if not (op == "call" and args.startswith("*")):
            return
        # `call *slot(%rip)`: a GOT slot is a direct call; RIOT native's real_* slots hold
        # the C library's functions; anything else is a pointer chosen at run time.
        slot = re.match(r"\*0x[0-9a-f]+\(%rip\)\s+# ([0-9a-f]+) <(.*)>$", args)
        if slot and slot.group(2).startswith("real_"):
            self.external.setdefault(function, set()).add(slot.group(2)[len("real_"):])
            return
        if slot and self.section_of(int(slot.group(1), 16)) == ".got":
            value = self.word_at(int(slot.group(1), 16))
            if value in self.names:
                self.call(function, value)
                return
        self.indirect.add(function)

    def section_of(self, address: int):
        for name, start, offset, size, _ in self.sections:
            if start <= address < start + size:
                return name
        return None

    def word_at(self, address: int) -> int:
        for _, start, offset, size, _ in self.sections:
            if start <= address < start + size:
                with open(self.elf, "rb") as image:
                    image.seek(offset + address - start)
                    return struct.unpack("<I" if self.arm else "<Q", image.read(4 if self.arm else 8))[0]
        return 0

    def find(self, name: str):
        return next((a for a, n in self.names.items() if n == name), None)

    def address_taken_in_data(self) -> set:
        """Functions whose address lies in the image's data: its allocated sections outside
        the functions' own bytes (a Cortex-M image keeps its read-only data in .text; a
        function's literal pool holds what its code loads), not the GOT, the constructor
        tables, nor other contexts' tables of entry points."""
        excluded = sorted(self.function_ranges + self.other_contexts)
        width = 4 if self.arm else 8
        taken = set()
        for name, address, offset, size, flags in self.sections:
            if "A" not in flags or name in (".got", ".got.plt", ".init_array", ".fini_array"):
                continue
            with open(self.elf, "rb") as image:
                image.seek(offset)
                data = image.read(size)
            for at in range(0, size - width + 1, width):
                value = struct.unpack_from("<I" if self.arm else "<Q", data, at)[0]
                if self.arm and not value & 1:  # a Thumb function's address has bit 0 set
                    continue
                function = value & ~1 if self.arm else value
                if function in self.function_starts and function in self.names \
                        and not inside(excluded, address + at):
                    taken.add(function)
        return taken

    def thread_overhead(self):
        """What the thread's stack holds besides its calls' frames: (bytes, [(what, bytes)])."""
        sizes = struct_sizes(self.elf, ("_thread", "ucontext_t"))
        if "_thread" not in sizes:
            raise SystemExit(f"{self.elf} has no DWARF for RIOT's thread_t (built without -g?)")
        parts = [("thread_t", sizes["_thread"])]
        if self.arm:
            parts.append(("exception frame with FPU, PendSV's saved registers", CORTEX_M4F_CONTEXT))
        else:
            if "ucontext_t" not in sizes:
                raise SystemExit(f"{self.elf} has no DWARF for ucontext_t")
            trampoline = self.find("_native_sig_leave_tramp")
            parts.append(("ucontext_t", sizes["ucontext_t"]))
            parts.append(("signal trampoline", self.frames.get(trampoline, 0) + 8))
            parts.append(("red zone", X86_64_RED_ZONE))
        return sum(size for _, size in parts), parts


def inside(ranges, address: int) -> bool:
    """Whether address lies in one of the sorted (start, end) ranges."""
    index = bisect.bisect_right(ranges, (address, float("inf"))) - 1
    return any(start <= address < end for start, end in ranges[max(index - 8, 0) : index + 1])


def run(command) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def symbols(elf: str):
    """Every symbol's address by name, the (start, end) of every function, and the (start,
    end) of every table of other contexts' entry points (OTHER_CONTEXTS)."""
    found, functions, objects = {}, [], []
    for line in run(["readelf", "-s", "-W", elf]).splitlines():
        fields = line.split()
        if len(fields) < 8 or not re.match(r"^[0-9a-f]+$", fields[1]):
            continue
        start = int(fields[1], 16)
        size = int(fields[2], 16) if fields[2].startswith("0x") else int(fields[2])
        found.setdefault(fields[7], start)
        if fields[3] == "FUNC":
            start &= ~1  # a Thumb function's address has bit 0 set
            functions.append((start, start + size))
        elif fields[3] == "OBJECT" and VECTORS.search(fields[7]):
            objects.append((start, start + size))
    for first, last in XFA_TABLES:
        if first in found and last in found:
            objects.append((found[first], found[last]))
    return found, sorted(functions), objects


def sections(elf: str):
    """(name, address, file offset, size, flags) of the sections with contents."""
    found = []
    for line in run(["readelf", "-S", "-W", elf]).splitlines():
        match = re.match(
            r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+\S+\s+(\S*)",
            line)
        if match and match.group(2) not in ("NOBITS", "NULL"):
            found.append((match.group(1), *(int(match.group(i), 16) for i in (3, 4, 5)),
                          match.group(6)))
    return found


def struct_sizes(elf: str, names) -> dict:
    """DW_AT_byte_size of the first structure (or typedef'd structure) with each name."""
    sizes, current = {}, None
    for line in run(["readelf", "--debug-dump=info", elf]).splitlines():
        if "DW_TAG_" in line:
            current = "structure" if "DW_TAG_structure_type" in line else None
            continue
        if current is None:
            continue
        name = re.search(r"DW_AT_name\s*:.*?:?\s(\S+)$", line)
        if name:
            current = name.group(1) if name.group(1) in names and name.group(1) not in sizes else None
            continue
        size = re.search(r"DW_AT_byte_size\s*:\s*(\d+)", line)
        if size and current not in (None, "structure"):
            sizes[current] = int(size.group(1))
            current = None
    return sizes


def deepest(frames, callees, entry):
    sys.setrecursionlimit(100_000)
    memo = {}

    def walk(function, path):
        if function in memo:
            return memo[function]
        depth, chain = 0, []
        for callee in sorted(callees.get(function, ())):
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
    image = Image(elf)
    entry = image.find(sys.argv[2] if len(sys.argv) == 3 else "main_trampoline")
    if entry is None:
        print(f"{elf} has no function {sys.argv[2:] or 'main_trampoline'}", file=sys.stderr)
        return 1
    stops = {a for a, name in image.names.items() if STOPS.search(name)}
    callees = {f: cs - stops for f, cs in image.callees.items()}
    targets = image.address_taken_in_data() - stops
    callees[INDIRECT] = targets
    for function in image.indirect:
        callees[function].add(INDIRECT)
    frames = dict(image.frames)
    frames[INDIRECT] = 0
    names = dict(image.names)
    names[INDIRECT] = "<indirect call>"

    reached, pending = set(), [entry]
    while pending:
        function = pending.pop()
        if function not in reached:
            reached.add(function)
            pending.extend(callees.get(function, ()))
    dynamic = sorted(f"{names[f]}: {image.unknown[f]}" for f in reached if f in image.unknown)
    if dynamic and image.arm:
        print("the thread can reach frames sized at run time, so no bound holds:",
              *dynamic, sep="\n  ", file=sys.stderr)
        return 1

    depth, chain = deepest(frames, callees, entry)
    overhead, parts = image.thread_overhead()
    print(f"stack: {depth + overhead} bytes worst case for the thread of {names[entry]}: "
          f"{depth} in calls, {overhead} for the thread ("
          + ", ".join(f"{name} {size}" for name, size in parts) + ")")
    print(f"indirect calls: {len(image.indirect & reached)} of the thread's functions make "
          f"them, each followed to any of the {len(targets)} functions whose address is in "
          "the image's data")
    unseen = sorted({names[f][: -len("@plt")] for f in reached & image.plt}
                    | {c for f in reached for c in image.external.get(f, ())})
    if unseen:
        print(f"not seen (the C library, outside the image): {' '.join(unseen)}")
    if dynamic:
        print("counted without their run-time part (frames sized at run time):", *dynamic,
              sep="\n  ")
    print("deepest path:")
    for function in chain:
        print(f"  {frames[function]:6d}  {names[function][:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
