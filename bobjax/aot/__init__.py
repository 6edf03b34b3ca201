"""``python -m bobjax.aot``: every JAX stage compiled ahead of time for a TPU or GPU target (see __main__)."""
