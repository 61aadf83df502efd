"""torch_lm: the PyTorch side of torch-lm.

Every component of ``numpy_ref`` has its twin here as an ``nn.Module`` (gradients by autograd);
``parity_tests/`` proves the two agree. Data loading, training, TensorBoard logging, checkpoints
and the command line exist only on this side.
"""
