"""Training pieces shared by the stages that train: optimizer and schedule, the LoRA diffusion step."""
