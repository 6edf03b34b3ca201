"""Which attention kernel each attention call of a program got, counted while the program is traced.

``auto`` decides per call in ``bobjax.models.attention_choice.choose`` (from the target's device, the call's shapes
and dtype); ``attention_choice.recorded_choices`` counts its answers for the calls traced inside it, and
:func:`summary` sums them per kernel. A model configured with an explicit
kernel (``config.model.attention='xla'``) never asks, and is reported as configured.
"""

from __future__ import annotations

import collections


def summary(counts: collections.Counter, configured: str) -> str:
    """``pallas 16, xla 32`` (calls traced per kernel), or the configured kernel when ``auto`` was not asked."""
    by_kernel = collections.Counter()
    for (_, kernel), n in counts.items():
        by_kernel[kernel] += n
    if not by_kernel:
        return "none" if configured == "auto" else f"{configured} (configured)"
    return ", ".join(f"{kernel} {n}" for kernel, n in sorted(by_kernel.items()))
