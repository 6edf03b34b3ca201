"""Where the classifier train step's bytes go: compiles the step as ``python -m bobjax.aot`` builds it
(``bobjax.aot.stage_programs.classify``) for a target and splits the compiled program's bytes accessed per device by op
kind, with its largest instructions.

    nice -n 15 python benchmarks/step_bytes.py --config=configs/paper.py:dataset=cub,backbone=clip --target=v5e:2x4
    python benchmarks/step_bytes.py --config=configs/demo.py --target=cpu      # smoke test: tiny ResNet, seconds

Method: XLA's ``cost_analysis()`` gives one total ("bytes accessed"); this script reads the optimized HLO text
(``compiled.as_text()``) and charges each top-level instruction of every computation that runs (the entry and the
bodies of loops and conditionals; not the insides of fusions) the bytes of its operands plus its result, as XLA's
cost model does for a fusion. It groups them by op kind (a fusion by the heaviest op it holds: convolution or dot,
then reduce, gather/scatter, dynamic slices, else elementwise; other instructions by opcode). Limitations: an
operand read only in part (a slice inside a fusion) is charged whole, an operand read twice once; a loop's body is
counted once, as XLA does; bitcasts, tuples and parameters cost nothing. So the sum is printed beside XLA's total:
the split is a guide to where bytes go, XLA's total is the figure. (On the demo's ResNet step on a CPU, 2026-12-07,
the sum is XLA's total to 1 %.)
"""

from __future__ import annotations

import collections
import os
import re

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/paper.py:dataset=cub,backbone=clip", "A bobjax config.")
_TARGET = flags.DEFINE_string("target", "v5e:2x4", "bobjax.targets name, or cpu.")
_PROGRAM = flags.DEFINE_string("program", "train step", "The classify program: prepare | train step | eval step.")
_TOP = flags.DEFINE_integer("top", 12, "The largest instructions to list.")
_HLO = flags.DEFINE_string("hlo", "", "Split this optimized HLO text instead of compiling: a file XLA dumped while "
                           "python -m bobjax.aot compiled (XLA_FLAGS='--xla_dump_to=DIR --xla_dump_hlo_as_text', "
                           "DIR/*jit_update*.after_optimizations.txt), so a real-size step compiles once.")

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8, "c64": 8}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64)\[([\d,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s([a-z][\w\-]*)\((.*)$")
_FREE = {"parameter", "tuple", "get-tuple-element", "bitcast", "constant", "after-all", "partition-id", "replica-id"}


def array_bytes(text: str) -> int:
    """The bytes of every array type written in ``text`` (``bf16[8,197,768]{2,1,0}``...)."""
    total = 0
    for dtype, dims in _ARRAY.findall(text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _BYTES[dtype]
    return total


def computations(hlo: str) -> dict[str, list[str]]:
    """HLO text -> {computation name: its instruction lines}."""
    out, name = {}, None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if head and not line.startswith(" "):
            name = head.group(1)
            out[name] = []
        elif name and line.startswith(" "):
            out[name].append(line)
    return out


def _kind(opcode: str, line: str, bodies: dict[str, list[str]]) -> str:
    if opcode != "fusion":
        return opcode
    called = re.search(r"calls=%?([\w.\-]+)", line)
    inner = " ".join(bodies.get(called.group(1), [])) if called else ""
    for kind, ops in (("fusion: convolution/dot", (" convolution(", " dot(")), ("fusion: reduce", (" reduce(",)),
                      ("fusion: gather/scatter", (" gather(", " scatter(")), ("fusion: dynamic slice/update",
                                                                              (" dynamic-slice(",
                                                                               " dynamic-update-slice("))):
        if any(op in inner for op in ops):
            return kind
    return "fusion: elementwise"


def breakdown(hlo: str) -> tuple[collections.Counter, list[tuple[int, str]]]:
    """(bytes by op kind, [(bytes, instruction)]) over the computations that run: the entry
    and every loop or conditional body it reaches, not the insides of fusions."""
    bodies = computations(hlo)
    entry = next((m.group(1) for m in re.finditer(r"^ENTRY\s+%?([\w.\-]+)", hlo, re.M)), None)
    running, todo = set(), [entry]
    while todo:
        name = todo.pop()
        if name in running or name not in bodies:
            continue
        running.add(name)
        for line in bodies[name]:
            todo += re.findall(r"(?:body|condition|branch_computations=\{|true_computation|false_computation)="
                               r"?%?([\w.\-]+)", line)
    shapes = {}  # Every instruction's result type: operands are written by name only.
    for lines in bodies.values():
        for line in lines:
            match = _INSTRUCTION.match(line)
            if match:
                shapes[match.group(1)] = match.group(2)
    kinds, each = collections.Counter(), []
    for name in running:
        for line in bodies[name]:
            match = _INSTRUCTION.match(line)
            if not match or match.group(3) in _FREE or match.group(3) in ("while", "conditional", "call"):
                continue
            result, opcode = match.group(2), match.group(3)
            operands = re.findall(r"%([\w.\-]+)", match.group(4).split(")")[0])
            size = array_bytes(result) + sum(array_bytes(shapes.get(o, "")) for o in operands)
            kinds[_kind(opcode, line, bodies)] += size
            each.append((size, f"{match.group(1)} = {result} {opcode}"))
    return kinds, sorted(each, reverse=True)


def _print(title: str, total: float | None, kinds: collections.Counter, each: list[tuple[int, str]]) -> None:
    counted = sum(kinds.values())
    ratio = f" ({counted / max(total, 1):.2f}x)" if total is not None else ""
    print(f"{title}; this script's sum over instructions {counted / 1e9:.3f} GB{ratio}")
    print("\nby op kind:")
    for key, size in kinds.most_common():
        print(f"  {key:34s} {size / 1e9:9.3f} GB  {100 * size / max(counted, 1):5.1f} %")
    print(f"\nthe {_TOP.value} largest instructions:")
    for size, text in each[:_TOP.value]:
        print(f"  {size / 1e9:9.3f} GB  {text[:150]}")


def main(argv) -> None:
    del argv
    if _HLO.value:
        with open(_HLO.value) as f:
            _print(f"{_HLO.value} (XLA's total: the bytes column of python -m bobjax.aot)", None,
                   *breakdown(f.read()))
        return
    from bobjax import targets

    needed = targets.compile_flags(_TARGET.value)
    if needed and needed not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {needed}".strip()
    import jax

    from bobjax.aot import stage_programs
    from bobjax.aot.compile import target_and_mesh

    config = _CONFIG.value
    _, mesh = target_and_mesh(_TARGET.value, config, "classify")
    program = next(p for p in stage_programs.classify(config, mesh) if p.name == _PROGRAM.value)
    with jax.set_mesh(mesh):
        compiled = program.lower().compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    total = float(cost.get("bytes accessed", 0.0))
    _print(f"classify {program.name} on {_TARGET.value} ({mesh.size} devices; {program.work}): XLA's bytes accessed "
           f"per device {total / 1e9:.3f} GB", total, *breakdown(compiled.as_text()))


if __name__ == "__main__":
    app.run(main)
