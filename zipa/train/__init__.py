"""Training: loop, distributed setup, checkpoints and averaging."""
