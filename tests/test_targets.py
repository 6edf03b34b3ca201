"""bobjax.targets: devices of rented chips without the hardware, and the device kernels are chosen for."""

import pytest
import target_compile

from bobjax import targets
from bobjax.errors import ConfigError

_DESCRIBE = """
import json, jax
from bobjax import parallel, targets
out = {}
for name in NAMES:
    t = targets.get(name)
    mesh = targets.mesh(t)
    seen = []
    def f(x):
        seen.append(parallel.target_device().device_kind)
        return x
    with jax.set_mesh(mesh):
        jax.jit(f).trace(jax.ShapeDtypeStruct((len(t.devices),), 'float32'))
    jax.jit(parallel.under_mesh(mesh, f)).trace(jax.ShapeDtypeStruct((len(t.devices),), 'float32'))
    jax.jit(f).trace(jax.ShapeDtypeStruct((1,), 'float32'))  # no mesh in context: this process's device
    out[name] = dict(platform=t.platform, devices=len(t.devices), hosts=t.num_hosts, kind=t.devices[0].device_kind,
                     traced_for=seen, hbm_per_device=t.hbm_bytes_per_device, mesh=dict(mesh.shape))
print(json.dumps(out))
"""


def describe(names, cuda=False):
    return target_compile.run(f"NAMES = {names!r}\n" + _DESCRIBE, cuda=cuda)


def test_tpu_slices_have_the_chips_hosts_and_kind_of_the_rented_slice():
    got = describe(["v5e:2x4", "v5e:4x4", "v6e:2x4", "v5p:2x2x1", "v4:2x2x1"])
    # A v5e-8 and a v6e-8 are one host of 8 chips; a v5e-16 is 4 hosts of 4 (libtpu's default would split the
    # v5e-8 over 2 hosts); a v5p chip is one (megacore) device, a v4 chip shows as 2 here.
    expected = {"v5e:2x4": (8, 1, "TPU v5 lite"), "v5e:4x4": (16, 4, "TPU v5 lite"), "v6e:2x4": (8, 1, "TPU v6 lite"),
                "v5p:2x2x1": (4, 1, "TPU v5"), "v4:2x2x1": (8, 1, "TPU v4")}
    for name, (devices, hosts, kind) in expected.items():
        assert (got[name]["devices"], got[name]["hosts"], got[name]["kind"]) == (devices, hosts, kind), name
        # jax.set_mesh or parallel.under_mesh decides; without either, this machine's device.
        assert got[name]["traced_for"] == [kind, kind, "cpu"], name
        assert got[name]["mesh"] == {"data": devices, "fsdp": 1}
    assert got["v5e:2x4"]["hbm_per_device"] == 16e9
    assert got["v4:2x2x1"]["hbm_per_device"] == 16 * 2**30  # 32 GiB per chip, 2 devices per chip


def test_nvidia_targets_have_the_cards_and_nodes_named():
    if reason := target_compile.cuda_plugin_missing():
        pytest.skip(reason)
    got = describe(["h100", "8xh100", "2x8xh100", "a100-40gb", "8xa100-40gb"], cuda=True)
    assert {n: (g["platform"], g["devices"], g["hosts"]) for n, g in got.items()} == {
        "h100": ("gpu", 1, 1), "8xh100": ("gpu", 8, 1), "2x8xh100": ("gpu", 16, 2), "a100-40gb": ("gpu", 1, 1),
        "8xa100-40gb": ("gpu", 8, 1)}
    assert got["h100"]["kind"] == "NVIDIA H100 80GB HBM3" and got["h100"]["traced_for"][0] == got["h100"]["kind"]
    assert got["a100-40gb"]["kind"] == "NVIDIA A100-SXM4-40GB"


@pytest.mark.parametrize("name,message", [
    ("v7:2x2", "unknown target 'v7:2x2'.*v5e:2x4"),
    ("v5e-8", "unknown target 'v5e-8'"),
    ("8xrtx4090", "CARD one of \\['a100-40gb', 'a100-80gb', 'h100', 'h200'\\]"),
    ("0x8xh100", "node and GPU counts must be at least 1"),
])
def test_a_bad_target_name_says_what_the_names_look_like(name, message):
    with pytest.raises(ConfigError, match=message):
        targets.get(name)


def test_every_chip_has_its_published_figures():
    for name, chip in targets.CHIPS.items():
        assert chip.hbm_bytes > 1e10 and chip.peak_bf16_flops > 1e14 and chip.hbm_bytes_per_s > 5e11, name


def test_only_nvidia_targets_need_the_deviceless_gemm_flag():
    """Without a GPU XLA's Triton GEMM emitter fails on the classifier's backward ("Couldn't find output tile
    sizes"); `python -m bobjax.aot` turns it off for NVIDIA targets only."""
    for name in ("h100", "8xh100", "2x8xh100", "a100-40gb"):
        assert targets.compile_flags(name) == "--xla_gpu_enable_triton_gemm=false", name
    for name in ("v5e:2x4", "v4:2x2x1", "cpu"):
        assert targets.compile_flags(name) == "", name
