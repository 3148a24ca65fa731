"""The network: frozen CLIP with its adapters, the fused model and its losses.

Imports only the data's float step (`finetrain.data.transforms`), never the loop or the evaluation.
"""
