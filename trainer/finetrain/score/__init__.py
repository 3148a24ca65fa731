"""Scores of a run: UAR/WAR, the predictions file, the protocol's counts and the fold table.

Shared by the training loop and the evaluation; imports neither, nor the model or the data.
"""
