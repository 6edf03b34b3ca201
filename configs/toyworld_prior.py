"""The toy-world Stable Diffusion prior that ships as ``bobjax:toyworld_prior`` (``python -m bobjax.toyworld.prior``).

A small SD (VAE 4x down to 16x16x8 latents at 64 px, a two-level UNet, a 2-layer CLIP text tower on the real
BPE vocabulary) pre-trained on toy birds of every class in every background and pose, captioned with BOB's
prompt with the object kind in place of the class name: it knows contexts and birds, not the classes.
Pre-trains in about 1.5 hours on a 2-core CPU (VAE 11 min, UNet 5,000 steps ~60 min); with
``init_unet=False`` on a shipped prior, the UNet alone (~60 min). Args: ``tiny=True``
shrinks everything for tests.
"""

import ml_collections

from bobjax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, tiny=False, seed=0)
    c = ml_collections.ConfigDict()
    c.seed = args.seed

    c.data = ml_collections.ConfigDict()
    c.data.descriptor = "bird"
    c.data.image_size = 64
    c.data.pool_size = 16384  # Rendered once (every class x background x pose, jittered), cached in the workdir.
    c.data.prompt = config_lib.BOB_PROMPT  # Filled with class_name=descriptor: the prior never sees class names.
    c.data.class_prompt = config_lib.CLASS_PROMPT  # DataDream's context-free prompt, so that one is known too.
    c.data.class_prompt_prob = 0.1
    # Captions whose object kind is a plain description of the bird's look ("red-crested bird with a fan tail").
    c.data.attribute_prompt_prob = 0.7
    c.data.empty_prompt_prob = 0.1  # Unconditional captions, for classifier-free guidance.

    # An exported prior of this architecture to continue from ("" trains from scratch); with it, vae.steps may be 0.
    c.init = ""
    c.init_unet = True  # False: only the init's autoencoder and text encoder; the UNet starts fresh.

    c.vae = ml_collections.ConfigDict(dict(
        block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16, latent_channels=8,
        kl_weight=1e-4, steps=2000, batch_size=16, crop_size=32,
        learning_rate=1e-3, warmup_steps=50, grad_clip_norm=1.0, weight_decay=0.0,
        adam_b1=0.9, adam_b2=0.99, adam_eps=1e-8))
    c.unet = ml_collections.ConfigDict(dict(
        block_out_channels=(64, 128), attention=(False, True), layers_per_block=1, attention_head_dim=4, norm_num_groups=32,
        steps=5000, batch_size=32,
        learning_rate=1e-3, warmup_steps=100, grad_clip_norm=1.0, weight_decay=1e-2,
        adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8))
    # Then the decoder alone on whole images (0 steps: skip): sharper crests and wing bars, same latent space.
    c.decoder = ml_collections.ConfigDict(dict(
        steps=200, batch_size=16, crop_size=0,
        learning_rate=3e-4, warmup_steps=20, grad_clip_norm=1.0, weight_decay=0.0,
        adam_b1=0.9, adam_b2=0.99, adam_eps=1e-8))
    # Frozen at its random init: see bobjax/toyworld/prior/models.py for why.
    c.text_encoder = ml_collections.ConfigDict(dict(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4))
    # DDPM's linear schedule and v-prediction (as SD 2.x), read by the finetune stage and every sampler of the
    # generate stage. Not SD 1.x's scaled_linear + epsilon: on 16x16 latents its last step keeps enough signal in
    # the latent mean (sqrt(a_T) = 0.07 vs noise 1/16) that the UNet took the background from the noise; and an
    # epsilon target barely depends on the image at high noise, so after 750 steps the UNet still ignored the
    # prompt. A v target at high noise is the clean image, which only the prompt can tell.
    c.scheduler = ml_collections.ConfigDict(dict(
        _class_name="PNDMScheduler", num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
        beta_schedule="linear", prediction_type="v_prediction", skip_prk_steps=True, set_alpha_to_one=False,
        steps_offset=1, clip_sample=False))

    c.checkpoint_every = 250
    c.log_every = 50
    c.tensorboard = True  # Scalars in WORKDIR/tb (clu; imports TensorFlow).
    c.sample_steps = 20  # PNDM steps of the sample grid written after export (0: no grid).
    c.guidance_scale = 2.0

    if args.tiny:
        c.data.pool_size = 16
        c.data.image_size = 16
        c.vae.update(block_out_channels=(8, 16), norm_num_groups=4, steps=3, batch_size=2, crop_size=8)
        c.decoder.update(steps=2, batch_size=2)
        c.unet.update(block_out_channels=(32,), attention=(True,), attention_head_dim=2, norm_num_groups=8, steps=3, batch_size=2)
        c.text_encoder.update(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
        c.checkpoint_every = 2
        c.tensorboard = False
        c.sample_steps = 2
    return c
