"""A trained run put to use: `finetrain evaluate` on another store, on new videos, and its report."""
