"""Stable Diffusion in Flax NNX: modules named like diffusers' so its checkpoints load without renames."""
