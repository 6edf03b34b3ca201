"""The tolerance of the PyTorch parity tests: max abs error within ``rel`` of the reference's scale (at least 1)."""

import numpy as np


def close(ours, ref, rel=1e-4):
    ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    bound = rel * max(1.0, float(np.abs(ref).max()))
    error = float(np.abs(ours - ref).max())
    assert error <= bound, f"max abs error {error} > {bound}"
