"""The trainer's input side: the store read as a Dataset, the batch pool, the drawn cues and the float step.

Nothing here imports the model, the loop or the evaluation; `transforms` imports no store reader, so the
model can finalise a batch without pyarrow or zarr.
"""
