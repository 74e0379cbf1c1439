"""Training: the loop, its loss, checkpoints, torchrun, tracking, and the training job."""
