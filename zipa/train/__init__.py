"""Training: loop, optimiser (ScaledAdam, Eden), distributed setup, training checkpoints
(:mod:`zipa.train.checkpoints`: full state to resume; model weights alone are :mod:`zipa.model.io`)
and averaging."""
