"""config.classify.dtype: bfloat16 computation really runs in bfloat16, stays close to float32, and leaves the
parameters and optimiser state in float32; "auto" is float32 on CPU.

Closeness, on random weights and images, same parameters, evaluation mode: max |logits_bf16 - logits_fp32| <=
0.05 * max |logits_fp32|. bfloat16 keeps 8 mantissa bits (relative rounding 2^-9 ~ 0.2 %); a few layers compound
it: measured 1.1-1.8 % of the largest logit for the tiny ResNet, ViT and CLIP over three inputs, so 5 % passes a
correct cast and fails a wrong model (an error of the size of the logits themselves).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from classify_run import saved_state, small_config
from flax import nnx

from bobjax.classify import backbones
from bobjax.classify import stage as classify
from bobjax.classify import step as step_lib
from bobjax.errors import ConfigError
from bobjax.models import clip, lora, resnet, vit

RELATIVE_TOLERANCE = 0.05
_MATMULS = ("dot_general", "conv_general_dilated")

TINY_CLIP = {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "max_position_embeddings": 16, "vocab_size": 1000, "eos_token_id": 999},
    "vision_config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "patch_size": 8, "image_size": 32},
    "projection_dim": 24,
}
PROMPT_IDS = np.array([[998, 5, 6, 999] + [999] * 12, [998, 7, 999] + [999] * 13])

MODELS = {
    "resnet_tiny": lambda dtype: resnet.resnet("resnet_tiny", 3, dtype=dtype, rngs=nnx.Rngs(0)),
    "vit": lambda dtype: vit.VisionTransformer(vit.ViTSpec(48, 2, 4, patch_size=8), 3, 32, dtype=dtype,
                                               rngs=nnx.Rngs(0)),
    "clip": lambda dtype: clip.CLIPClassifier(TINY_CLIP, PROMPT_IDS, 32, dtype=dtype, rngs=nnx.Rngs(0)),
}


def matmul_input_dtypes(fn, *args) -> list[tuple[str, ...]]:
    """The operand dtypes of every matrix product and convolution ``fn`` runs, nested programs included."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in _MATMULS:
                found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
            for value in eqn.params.values():
                for sub in value if isinstance(value, (list, tuple)) else [value]:
                    if hasattr(sub, "eqns"):
                        walk(sub)
                    elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def same_weights_in(dtype, name):
    """The float32 model with every parameter randomised (no zero head, no identity blocks), and the model of
    computation dtype ``dtype`` holding the same parameters; both in evaluation mode (BatchNorm over a batch of
    four 1 x 1 maps would amplify any difference, float32's own included)."""
    reference = MODELS[name](jnp.float32)
    params = nnx.state(reference, nnx.Param)
    rng = np.random.default_rng(1)  # On the host: jax.random here would compile a program per parameter shape.
    nnx.update(reference, jax.tree.map(lambda p: jnp.asarray(np.asarray(p) + 0.05 * rng.normal(size=p.shape), p.dtype),
                                       params))
    other = MODELS[name](dtype)
    nnx.update(other, nnx.state(reference))
    reference.eval()
    other.eval()
    return reference, other


def forward(model):
    """(the model's call as a jitted function of its state and input, its state): run eagerly, every operation would
    compile on its own."""
    graph, state = nnx.split(model)
    return jax.jit(lambda state, x: nnx.merge(graph, state)(x)), state


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bfloat16_computes_in_bfloat16_close_to_float32_with_float32_parameters(name):
    reference, model = same_weights_in(jnp.bfloat16, name)
    assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
    x = jax.random.uniform(jax.random.key(2), (4, 32, 32, 3), jnp.float32, -1.0, 1.0)

    fn, state = forward(model)
    matmuls = matmul_input_dtypes(fn, state, x.astype(jnp.bfloat16))
    in_float32 = [m for m in matmuls if "float32" in m]
    # CLIP alone keeps one float32 product on purpose: the cosine logits, scaled by up to 100.
    assert len(matmuls) > 5 and len(in_float32) == (1 if name == "clip" else 0), matmuls
    assert all(m == ("bfloat16", "bfloat16") for m in matmuls if m not in in_float32)

    logits = np.asarray(fn(state, x.astype(jnp.bfloat16)).astype(jnp.float32))
    ref_fn, ref_state = forward(reference)
    expected = np.asarray(ref_fn(ref_state, x))
    error = np.max(np.abs(logits - expected))
    assert 0 < error <= RELATIVE_TOLERANCE * np.max(np.abs(expected)), (error, np.max(np.abs(expected)))


def test_float32_stays_float32():
    fn, state = forward(MODELS["vit"](jnp.float32))
    matmuls = matmul_input_dtypes(fn, state, jnp.zeros((1, 32, 32, 3), jnp.float32))
    assert matmuls and set(matmuls) == {("float32", "float32")}


def test_auto_is_float32_on_cpu_and_bfloat16_on_accelerators(monkeypatch):
    assert jax.default_backend() == "cpu"
    assert step_lib.compute_dtype("auto") == jnp.float32
    assert step_lib.compute_dtype("float32") == jnp.float32
    assert step_lib.compute_dtype("bfloat16") == jnp.bfloat16
    for platform in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda platform=platform: platform)
        assert step_lib.compute_dtype("auto") == jnp.bfloat16
    with pytest.raises(ConfigError, match=r"config.classify.dtype is 'float16'; expected one of \('auto', 'float32', "
                                          r"'bfloat16'\)"):
        step_lib.compute_dtype("float16")


@pytest.mark.slow
def test_stage_in_bfloat16_keeps_parameters_and_optimiser_state_in_float32(tmp_path, one_device, monkeypatch):
    built, original = [], backbones.build

    def build(*args, **kwargs):
        built.append(kwargs["dtype"])
        return original(*args, **kwargs)

    monkeypatch.setattr(classify.backbones, "build", build)
    result = classify.run(small_config(**{"classify.dtype": "bfloat16"}), str(tmp_path))
    assert built == [jnp.bfloat16]
    assert 0 <= result["test"]["top1"] <= 100
    state = saved_state(str(tmp_path))
    floats = {x.dtype for x in jax.tree.leaves((state["params"], state["stats"], state["opt_state"]))
              if np.issubdtype(x.dtype, np.floating) or x.dtype == jnp.bfloat16}
    assert floats == {np.dtype(np.float32)}


def test_the_lora_clip_classifier_attends_in_bfloat16_close_to_float32():
    """The classifier's CLIP carries float32 LoRA adapters on q_proj and v_proj (classify.backbones); their products
    must not promote the bfloat16 model's attention to float32 (the log's 'self-attention of 197 queries ...
    float32' at real size). Same tolerance as above: 5 % of the largest float32 logit."""
    reference, model = same_weights_in(jnp.bfloat16, "clip")
    example = jnp.zeros((1, 32, 32, 3), jnp.float32)
    adapters = lora.LoraConfig(rank=4, alpha=8.0, targets=backbones.CLIP_LORA_TARGETS)
    with_lora = {}
    for name, m in (("reference", reference), ("model", model)):
        with_lora[name] = lora.add_lora(m, adapters, example, rngs=nnx.Rngs(3))
    lora_params = nnx.state(with_lora["reference"], nnx.LoRAParam)
    rng = np.random.default_rng(4)  # B is zero: make it count
    nnx.update(with_lora["reference"], jax.tree.map(
        lambda p: jnp.asarray(np.asarray(p) + 0.05 * rng.normal(size=p.shape), p.dtype), lora_params))
    nnx.update(with_lora["model"], nnx.state(with_lora["reference"]))
    x = jax.random.uniform(jax.random.key(2), (4, 32, 32, 3), jnp.float32, -1.0, 1.0)

    fn, state = forward(with_lora["model"])
    matmuls = matmul_input_dtypes(fn, state, x.astype(jnp.bfloat16))
    in_float32 = [m for m in matmuls if "float32" in m]
    # Float32 on purpose: each adapter's x @ A and @ B (q_proj and v_proj, 2 layers, 2 towers: 8 adapters) and the
    # cosine logits. Before the cast, each layer's q.k and p.v were float32 too: 8 more.
    assert len(in_float32) == 2 * 8 + 1, matmuls
    assert matmuls.count(("bfloat16", "bfloat16")) == len(matmuls) - len(in_float32) >= 4 * (4 + 2), matmuls

    logits = np.asarray(fn(state, x.astype(jnp.bfloat16)).astype(jnp.float32))
    ref_fn, ref_state = forward(with_lora["reference"])
    expected = np.asarray(ref_fn(ref_state, x))
    error = np.max(np.abs(logits - expected))
    assert 0 < error <= RELATIVE_TOLERANCE * np.max(np.abs(expected)), (error, np.max(np.abs(expected)))
