"""ResNets in Flax NNX, named like timm's ``ResNet`` so timm checkpoints load key for key.

One module covers the whole family through a preset table (block kind, blocks per stage, widths): the full-size
``resnet50`` of BOB and a ``resnet_tiny`` that trains from scratch on a CPU for the toy-world demo. Layout is NHWC.
The classifier head is ``fc``; :func:`load_timm_resnet` keeps or replaces it. ``dtype`` is the computation dtype:
parameters and BatchNorm statistics stay float32 (BatchNorm also normalises in float32), only convolutions and
the head compute in ``dtype``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bobjax.errors import ConfigError
from bobjax.models import materialize, pointwise, weights


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    block: str  # "basic" (two 3x3 convs) or "bottleneck" (1x1, 3x3, 1x1, expansion 4)
    depths: tuple[int, int, int, int]
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_width: int = 64


# timm's definitions (resnet18 / 26 / 34 / 50) and a tiny one for the CPU demo.
PRESETS = {
    "resnet_tiny": ResNetSpec("basic", (1, 1, 1, 1), (16, 32, 64, 128), stem_width=16),
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2)),
    "resnet26": ResNetSpec("bottleneck", (2, 2, 2, 2)),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3)),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}

# He init on fan-out, as timm (and torchvision) initialise ResNet convolutions.
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(cin: int, cout: int, kernel: int, stride: int, dtype, rngs: nnx.Rngs) -> nnx.Conv:
    pad = kernel // 2
    return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                    use_bias=False, kernel_init=_conv_init, dtype=dtype,
                    conv_general_dilated=pointwise.conv_general_dilated, rngs=rngs)


def _bn(features: int, dtype, rngs: nnx.Rngs, zero_scale: bool = False) -> nnx.BatchNorm:
    # torch momentum 0.1 == flax momentum 0.9; exact (two-pass) variance to match torch.
    init = nnx.initializers.zeros_init() if zero_scale else nnx.initializers.ones_init()
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, use_fast_variance=False, scale_init=init, dtype=dtype,
                         rngs=rngs)


class BasicBlock(nnx.Module):
    def __init__(self, cin: int, planes: int, stride: int, dtype, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, planes, 3, stride, dtype, rngs)
        self.bn1 = _bn(planes, dtype, rngs)
        self.conv2 = _conv(planes, planes, 3, 1, dtype, rngs)
        self.bn2 = _bn(planes, dtype, rngs, zero_scale=True)  # Each block starts as the identity (timm zero_init_last).
        self.downsample = _downsample(cin, planes, stride, dtype, rngs)

    def __call__(self, x):
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        return materialize.residual(jax.nn.relu(self.bn2(self.conv2(y)) + shortcut))


class Bottleneck(nnx.Module):
    def __init__(self, cin: int, planes: int, stride: int, dtype, rngs: nnx.Rngs):
        out = planes * EXPANSION["bottleneck"]
        self.conv1 = _conv(cin, planes, 1, 1, dtype, rngs)
        self.bn1 = _bn(planes, dtype, rngs)
        self.conv2 = _conv(planes, planes, 3, stride, dtype, rngs)
        self.bn2 = _bn(planes, dtype, rngs)
        self.conv3 = _conv(planes, out, 1, 1, dtype, rngs)
        self.bn3 = _bn(out, dtype, rngs, zero_scale=True)
        self.downsample = _downsample(cin, out, stride, dtype, rngs)

    def __call__(self, x):
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = jax.nn.relu(self.bn2(self.conv2(y)))
        return materialize.residual(jax.nn.relu(self.bn3(self.conv3(y)) + shortcut))


def _downsample(cin: int, cout: int, stride: int, dtype, rngs: nnx.Rngs) -> nnx.List | None:
    if stride == 1 and cin == cout:
        return None
    return nnx.List([_conv(cin, cout, 1, stride, dtype, rngs), _bn(cout, dtype, rngs)])


class ResNet(nnx.Module):
    """Stem (7x7/2 conv, max-pool), four stages, global average pool, linear head ``fc``."""

    def __init__(self, spec: ResNetSpec, num_classes: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        if spec.block not in EXPANSION:
            raise ConfigError(f"ResNet block {spec.block!r} is not one of {sorted(EXPANSION)}")
        block = BasicBlock if spec.block == "basic" else Bottleneck
        self.conv1 = _conv(3, spec.stem_width, 7, 2, dtype, rngs)
        self.bn1 = _bn(spec.stem_width, dtype, rngs)
        cin = spec.stem_width
        for stage, (depth, width) in enumerate(zip(spec.depths, spec.widths)):
            blocks = []
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(block(cin, width, stride, dtype, rngs))
                cin = width * EXPANSION[spec.block]
            setattr(self, f"layer{stage + 1}", nnx.List(blocks))
        self.num_features = cin
        self.fc = nnx.Linear(cin, num_classes, dtype=dtype, rngs=rngs)

    def features(self, x):
        """NHWC images -> pooled features [B, num_features]."""
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, x):
        return self.fc(self.features(x))


def resnet(name: str, num_classes: int, *, dtype=jnp.float32, rngs: nnx.Rngs) -> ResNet:
    if name not in PRESETS:
        raise ConfigError(f"unknown ResNet {name!r}; expected one of {sorted(PRESETS)}")
    return ResNet(PRESETS[name], num_classes, dtype=dtype, rngs=rngs)


def _batch_stat_key(key: str) -> str | None:
    """timm BatchNorm buffers -> NNX names; the step counter has no NNX counterpart."""
    if key.endswith("num_batches_tracked"):
        return None
    return key.replace("running_mean", "mean").replace("running_var", "var")


def load_timm_resnet(model: ResNet, state_dict: dict[str, np.ndarray], *, new_head: bool, source: str = "timm checkpoint") -> None:
    """Copies a timm ResNet state dict into ``model``; with ``new_head`` the checkpoint's ``fc`` is ignored."""
    params = {k: v for k, v in state_dict.items() if "running_" not in k and "num_batches_tracked" not in k}
    stats = {k: v for k, v in state_dict.items() if "running_" in k}
    if new_head or "fc.weight" not in params:  # Feature-only checkpoints (num_classes=0) have no head.
        params = {k: v for k, v in params.items() if not k.startswith("fc.")}
        head = {f"fc.{n}": weights.export_state_dict(model.fc)[n] for n in ("weight", "bias")}
        params.update(head)  # Keeps the model's freshly initialised head.
    weights.load_state_dict(model, params, source=source)
    weights.load_state_dict(model, stats, rename=_batch_stat_key, variable_type=nnx.BatchStat, source=source)
