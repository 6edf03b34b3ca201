"""What the training loops share (finetune, classify, the toy-world prior): checkpoints restored onto the
current mesh, one rule for periodic actions, one divergence error; the diffusion objective and optimizer that
fine-tuning and the prior's pre-training both use."""
