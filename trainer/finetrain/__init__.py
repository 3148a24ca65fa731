"""finetrain: FineCLIPER-style CLIP adapters trained on a fineprep store. Never imports fineprep."""

__version__ = "0.1.0"
