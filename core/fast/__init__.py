"""Speed machinery with the same numbers: thread set-up, per-sample gradients, packed convolutions,
model stages, torchrun. It imports nothing else of ``core``."""
