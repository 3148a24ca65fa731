"""The training loop and what it runs on: the recipe, runtime, checkpoints, logs, stream plan, folds, zero-shot."""
