"""Schedulers against diffusers' (torch) schedulers built from the same scheduler_config.

Each sampler and diffusers' scheduler are driven by the same deterministic stand-in for the UNet,
``out = 0.3 * x + 0.1 * sin(t / 100)`` on the (scaled) model input, from the same initial noise.
Tolerance: at every step |ours - diffusers| <= 1e-5 * max(1, max|diffusers|), float32. Relative to the
sample's scale because Euler's samples start at |x| ~ 50 (init_noise_sigma ~ 14.6) where float32's
resolution is already 4e-6; for trajectories within [-1, 1] this is 1e-5 absolute.
"""

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bobjax.models.sd.schedulers import SAMPLERS, NoiseSchedule, make_sampler, sample_loop

SD1 = {  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
SD2 = {**SD1, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}  # stabilityai/stable-diffusion-2-1
COSINE = {"beta_schedule": "squaredcos_cap_v2", "skip_prk_steps": True, "timestep_spacing": "linspace"}

# (sampler, label, config): SD1- and SD2-like configs for every sampler, plus the other options each implements.
CASES = [(name, label, conf) for name in SAMPLERS for label, conf in (("sd1", SD1), ("sd2", SD2))] + [
    (
        "ddim",
        "clip-trailing",
        {**SD1, "clip_sample": True, "prediction_type": "sample", "timestep_spacing": "trailing"},
    ),
    ("ddim", "cosine-alpha-to-one", {**COSINE, "set_alpha_to_one": True, "clip_sample": False}),
    ("pndm", "v-trailing-alpha-to-one", {**SD2, "timestep_spacing": "trailing", "set_alpha_to_one": True}),
    ("pndm", "cosine", {**COSINE, "prediction_type": "epsilon"}),
    ("dpmpp_2m", "heun-sigma-min", {**SD1, "solver_type": "heun", "final_sigmas_type": "sigma_min"}),
    (
        "dpmpp_2m",
        "v-second-order-final-leading",
        {**SD2, "lower_order_final": False, "final_sigmas_type": "sigma_min", "timestep_spacing": "leading"},
    ),
    ("dpmpp_2m", "cosine-clipped-sample", {**COSINE, "lambda_min_clipped": -5.1, "prediction_type": "sample"}),
    ("dpmpp_2m", "first-order-trailing", {**SD1, "solver_order": 1, "timestep_spacing": "trailing"}),
    ("euler", "leading-sigma-min", {**SD1, "timestep_spacing": "leading", "final_sigmas_type": "sigma_min"}),
    ("euler", "sample-trailing", {**SD2, "timestep_spacing": "trailing", "prediction_type": "sample"}),
]
TRAJECTORY_CASES = [pytest.param(name, conf, id=f"{name}-{label}") for name, label, conf in CASES]
TOLERANCE = 1e-5


def reference(name, scheduler_config, num_inference_steps):
    scheduler = getattr(diffusers, SAMPLERS[name][1]).from_config(scheduler_config)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def stand_in_model(model_input, timestep):
    """Same formula for numpy, torch and jax inputs: a deterministic, timestep-dependent 'UNet'."""
    if isinstance(model_input, torch.Tensor):
        return 0.3 * model_input + 0.1 * torch.sin(timestep.to(torch.float32) / 100)
    return 0.3 * model_input + 0.1 * jnp.sin(jnp.asarray(timestep, jnp.float32) / 100)


def initial_noise(shape=(2, 8, 8, 4)):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def python_loop(sampler, sample):
    """Our sampler stepped eagerly, one Python iteration per step; returns every intermediate sample."""
    state, trajectory = sampler.init_state(sample), []
    for i in range(sampler.num_steps):
        model_output = stand_in_model(sampler.scale_model_input(sample, i), sampler.timesteps[i])
        sample, state = sampler.step(state, model_output, i, sample)
        trajectory.append(np.asarray(sample))
    return trajectory


@pytest.mark.parametrize("name,scheduler_config", TRAJECTORY_CASES)
def test_trajectory_matches_diffusers(name, scheduler_config):
    steps = 10
    ref, ours = reference(name, scheduler_config, steps), make_sampler(name, scheduler_config, steps)
    np.testing.assert_array_equal(np.asarray(ours.timesteps), ref.timesteps.numpy())
    noise = initial_noise()
    x_ref = torch.from_numpy(noise) * ref.init_noise_sigma
    trajectory = python_loop(ours, jnp.asarray(noise) * ours.init_noise_sigma)
    assert len(trajectory) == len(ref.timesteps)
    for i, t in enumerate(ref.timesteps):
        x_ref = ref.step(stand_in_model(ref.scale_model_input(x_ref, t), t), t, x_ref).prev_sample
        expected = x_ref.numpy()
        error = np.abs(trajectory[i] - expected).max()
        bound = TOLERANCE * max(1.0, np.abs(expected).max())
        assert error <= bound, f"step {i} (t={int(t)}): max abs error {error:.3g} > {bound:.3g}"


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 25, 50])
def test_timesteps_and_init_noise_sigma_match_diffusers(name, spacing, steps):
    conf = {**SD1, "timestep_spacing": spacing}
    ref, ours = reference(name, conf, steps), make_sampler(name, conf, steps)
    np.testing.assert_array_equal(np.asarray(ours.timesteps), ref.timesteps.numpy())
    np.testing.assert_allclose(ours.init_noise_sigma, float(ref.init_noise_sigma), rtol=1e-6)


@pytest.mark.parametrize("name", ["ddim", "pndm", "euler"])
def test_trailing_spacing_drops_diffusers_spurious_last_step(name):
    """For n = 61 diffusers' trailing spacing ends with an extra timestep -1; ours is the other 61."""
    conf = {**SD1, "timestep_spacing": "trailing"}
    ref_timesteps = reference(name, conf, 61).timesteps.numpy()
    assert ref_timesteps[-1] == -1
    np.testing.assert_array_equal(np.asarray(make_sampler(name, conf, 61).timesteps), ref_timesteps[:-1])


@pytest.mark.parametrize(
    "name,scheduler_config",
    [pytest.param(name, SD1, id=f"{name}-sd1") for name in SAMPLERS] + [pytest.param("pndm", SD2, id="pndm-sd2")],
)
def test_fori_loop_under_jit_matches_python_loop(name, scheduler_config):
    sampler = make_sampler(name, scheduler_config, 10)
    initial = jnp.asarray(initial_noise()) * sampler.init_noise_sigma
    final = jax.jit(lambda s, x: sample_loop(s, stand_in_model, x))(sampler, initial)
    expected = python_loop(sampler, initial)[-1]
    # Same float32 arithmetic, only fused differently by XLA: a few float32 ulps of the sample's scale.
    np.testing.assert_allclose(np.asarray(final), expected, rtol=0, atol=2e-6 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize(
    "scheduler_config", [SD1, SD2, COSINE, {"beta_schedule": "linear"}], ids=["sd1", "sd2", "cosine", "linear"]
)
def test_add_noise_and_velocity_match_ddpm_scheduler(scheduler_config):
    ref = diffusers.DDPMScheduler.from_config(scheduler_config)
    ours = NoiseSchedule.from_config(scheduler_config)
    np.testing.assert_allclose(np.asarray(ours.alphas_cumprod), ref.alphas_cumprod.numpy(), rtol=1e-6, atol=0)
    rng = np.random.default_rng(1)
    x0, noise = (rng.standard_normal((6, 4, 4, 3)).astype(np.float32) for _ in range(2))
    t = np.array([0, 1, 250, 500, 998, 999])
    expected_noisy = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
    expected_v = ref.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(np.asarray(ours.add_noise(x0, noise, t)), expected_noisy, rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.asarray(ours.get_velocity(x0, noise, t)), expected_v, rtol=0, atol=2e-6)
    targets = {p: np.asarray(ours.training_target(x0, noise, t, p)) for p in ("epsilon", "v_prediction", "sample")}
    np.testing.assert_array_equal(targets["epsilon"], noise)
    np.testing.assert_allclose(targets["v_prediction"], expected_v, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(targets["sample"], x0)
    configured = scheduler_config.get("prediction_type", "epsilon")
    np.testing.assert_array_equal(np.asarray(ours.training_target(x0, noise, t)), targets[configured])


@pytest.mark.parametrize(
    "name,field,value",
    [
        ("ddim", "beta_schedule", "cosine"),
        ("ddim", "prediction_type", "flow_prediction"),
        ("ddim", "timestep_spacing", "uniform"),
        ("ddim", "thresholding", True),
        ("ddim", "num_train_timesteps", 0),
        ("ddim", "beta_start", "0.00085"),
        ("ddim", "trained_betas", [0.1, 0.2]),
        ("ddim", "rescale_betas_zero_snr", True),
        ("pndm", "skip_prk_steps", False),
        ("pndm", "prediction_type", "sample"),
        ("dpmpp_2m", "solver_order", 3),
        ("dpmpp_2m", "algorithm_type", "sde-dpmsolver++"),
        ("dpmpp_2m", "use_karras_sigmas", True),
        ("dpmpp_2m", "variance_type", "learned_range"),
        ("euler", "use_karras_sigmas", True),
        ("euler", "interpolation_type", "log_linear"),
        ("euler", "timestep_type", "continuous"),
    ],
)
def test_bad_config_field_is_named(name, field, value):
    with pytest.raises(ValueError, match=f"'{field}'") as error:
        make_sampler(name, {**SD1, field: value}, 10)
    assert name in str(error.value)
    if field != "trained_betas":  # its error names the length mismatch instead of the whole list
        assert repr(value) in str(error.value)


def test_pndm_without_skip_prk_steps_uses_diffusers_default_and_refuses_it():
    conf = {k: v for k, v in SD1.items() if k != "skip_prk_steps"}  # diffusers' PNDM default: False (PRK)
    with pytest.raises(ValueError, match="'skip_prk_steps' = False"):
        make_sampler("pndm", conf, 10)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown sampler 'heun'"):
        make_sampler("heun", SD1, 10)
    for steps in (0, 1001, 2.5):
        with pytest.raises(ValueError, match="num_inference_steps"):
            make_sampler("ddim", SD1, steps)
    with pytest.raises(ValueError, match="scheduler_config must be a dict"):
        make_sampler("ddim", None, 10)
    with pytest.raises(ValueError, match="'beta_schedule' = 'sigmoid'"):
        NoiseSchedule.from_config({"beta_schedule": "sigmoid"})
    with pytest.raises(ValueError, match="prediction_type 'flow'"):
        NoiseSchedule.from_config(SD1).training_target(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2, jnp.int32), "flow")
