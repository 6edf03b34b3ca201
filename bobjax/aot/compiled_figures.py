"""A compiled program's figures for a target: memory per device, FLOPs and bytes per call, the roofline bound, and
whether it fits the chip; the table ``python -m bobjax.aot`` prints.

Memory is the compiler's ``memory_analysis()`` (per device): arguments + outputs - aliased (donated buffers reused
for outputs) + temporaries + generated code. Bytes accessed are the compiled program's ``cost_analysis()`` per device
(for an NVIDIA target compiled without a GPU, XLA's HLO cost analysis of the optimised module, which does not see
the cuBLAS, cuDNN and attention custom calls, so it undercounts there). FLOPs are the program's arithmetic as
written (:func:`arithmetic_flops`, divided by the devices), the same on every target. XLA counts a loop's body once,
so the sampler's figures add its loop body's ``steps - 1`` more times (``bobjax.aot.stage_programs``). The roofline
bound of a call is max(FLOPs / peak bf16 FLOP/s, bytes / HBM bandwidth) with the chip's published figures
(``bobjax.targets.CHIPS``): a lower bound on its time, which real kernels reach only in part. Whether it fits is
:mod:`bobjax.fit`'s verdict, the one each stage reaches on its device.
"""

from __future__ import annotations

import dataclasses

from bobjax import fit

GiB = fit.GiB


@dataclasses.dataclass
class Figures:
    stage: str
    program: str
    work: str
    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    code: int
    flops: float
    bytes_accessed: float
    calls: int | None
    compile_s: float
    attention: dict  # {"summary": "pallas 16, xla 32", "calls": [...]} (bobjax.aot.kernels)
    points: int = 1  # Sweep points a call serves (a packed classifier program)

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code


def arithmetic_flops(lowered) -> float:
    """FLOPs of a lowered program as written, all devices together: XLA's HLO cost analysis, on the CPU client, of the
    module before XLA partitions it or swaps in library calls. Every matmul and convolution counts, which a compiled
    NVIDIA module hides from the analysis (cuBLAS and cuDNN custom calls; so do Pallas and cuDNN attention kernels,
    hence :mod:`bobjax.aot.compile` lowers the SD stages again with ``xla`` attention for this count)."""
    return float(_cpu_cost_analysis(lowered.compiler_ir("hlo").as_hlo_module()).get("flops", 0.0))


def _cpu_cost_analysis(module) -> dict:
    """XLA's HLO cost analysis of ``module``, run by the CPU client: it answers for a module of any target (jaxlib's
    own entry point; no public API takes a module)."""
    import jax
    from jax._src.lib import xla_client

    return xla_client._xla.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    if not cost:
        # A GPU program compiled without a GPU answers None: the CPU client's analysis of its optimised module
        # counts the same HLO (cuDNN's fused attention is a custom call it does not see).
        cost = _cpu_cost_analysis(compiled.runtime_executable().hlo_modules()[0])
    return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


def figures(program, compiled, compile_s: float, loop_body=None, loop_extra: int = 0, attention=None,
            flops: float | None = None) -> Figures:
    """``program`` (``stage_programs.Program``) compiled; ``loop_body`` (compiled) is added ``loop_extra`` times to the
    cost.
    ``flops`` per device (:func:`arithmetic_flops`) replaces the compiled module's count where given."""
    memory = compiled.memory_analysis()
    cost = _cost(compiled)
    if loop_body is not None:
        body = _cost(loop_body)
        cost = {k: cost[k] + loop_extra * body[k] for k in cost}
    return Figures(program.stage, program.name, program.work, memory.argument_size_in_bytes,
                   memory.output_size_in_bytes, memory.alias_size_in_bytes, memory.temp_size_in_bytes,
                   memory.generated_code_size_in_bytes, cost["flops"] if flops is None else flops, cost["bytes"],
                   program.calls, compile_s, attention or {"summary": "-", "calls": []}, program.points)


def bound_s(f: Figures, chip) -> float | None:
    """The roofline bound of one call, seconds (None without chip figures)."""
    if chip is None:
        return None
    return max(f.flops / chip.peak_bf16_flops, f.bytes_accessed / chip.hbm_bytes_per_s)


def usable_bytes(target) -> float | None:
    """What a JAX program may allocate on one device of ``target``."""
    if target is None:
        return None
    return fit.usable_on_chip(target.hbm_bytes_per_device, target.platform)


def fit_verdict(f: Figures, target, setting: str) -> tuple[str, str | None]:
    """(:func:`bobjax.fit.verdict`, the line naming ``setting`` when it is tight or does not fit) for ``f`` on
    ``target``: the check each stage runs on its device before its first step, with the chip's figures."""
    usable = usable_bytes(target)
    if usable is None:
        return "fits", None
    return (fit.verdict(f.total, usable),
            fit.describe(f.total, usable, f"{f.stage} {f.program}", target.name, setting))


def row(f: Figures, target) -> dict:
    chip = target.chip if target is not None else None
    bound = bound_s(f, chip)
    hbm = target.hbm_bytes_per_device if target is not None else None
    return {**dataclasses.asdict(f), "total": f.total, "bound_s": bound,
            "stage_bound_s": bound * f.calls if bound is not None and f.calls is not None else None,
            "device_bytes": hbm, "jax_usable_bytes": usable_bytes(target),
            "headroom": 1 - f.total / hbm if hbm else None}


def table(rows: list[dict], title: str) -> str:
    """The printed table, one line per program."""
    head = (f"{'stage':9s} {'program':18s} {'args':>6s} {'out':>6s} {'alias':>6s} {'temp':>6s} {'code':>5s} "
            f"{'total':>6s} {'of HBM':>7s} {'TFLOP':>8s} {'GB acc':>7s} {'bound s':>8s} {'calls':>8s} "
            f"{'stage h':>8s} {'compile s':>9s}  attention; work")
    lines = [title, "GiB per device; FLOP and bytes per device per call; bound = max(FLOP/peak, bytes/bandwidth)",
             head]
    for r in rows:
        gib = lambda k: f"{r[k] / GiB:6.2f}"  # noqa: E731
        share = f"{r['total'] / r['device_bytes']:7.0%}" if r["device_bytes"] else "      -"
        bound = f"{r['bound_s']:8.3f}" if r["bound_s"] is not None else "       -"
        calls = f"{r['calls']:8d}" if r["calls"] is not None else "       -"
        stage = f"{r['stage_bound_s'] / 3600:8.2f}" if r["stage_bound_s"] is not None else "       -"
        lines.append(f"{r['stage']:9s} {r['program']:18s} {gib('arguments')} {gib('outputs')} {gib('aliased')} "
                     f"{gib('temporaries')} {r['code'] / GiB:5.2f} {gib('total')} {share} {r['flops'] / 1e12:8.3f} "
                     f"{r['bytes_accessed'] / 1e9:7.1f} {bound} {calls} {stage} {r['compile_s']:9.0f}  "
                     f"{r['attention']['summary']}; {r['work']}")
    return "\n".join(lines)
