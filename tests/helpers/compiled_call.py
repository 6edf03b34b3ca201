"""A module's method as one jitted call, for parity tests that run a model once: XLA compiles the whole call
instead of each of its ops eagerly, one by one (several times faster on a CPU)."""

import jax
from flax import nnx


def compiled(module, method: str = "__call__"):
    """``module.method`` jitted over the module's current state; call it with the method's arguments."""
    graph, state = nnx.split(module)
    call = jax.jit(lambda state, *args: getattr(nnx.merge(graph, state), method)(*args))
    return lambda *args: call(state, *args)
