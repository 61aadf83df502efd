"""numpy_ref: the reference implementation of every torch-lm component in plain NumPy.

Each layer is a pair of functions, ``<name>_forward(...) -> (out, cache)`` and
``<name>_backward(dout, cache) -> gradients``, with hand-derived gradients. Weights use
torch's layout (``w`` is ``(out_features, in_features)``) and parameter dicts use the same keys
as the matching ``torch_lm`` module's ``state_dict()``.

This package never imports torch, so it can be read and trusted on its own.
"""
