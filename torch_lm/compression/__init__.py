"""Lossless text compression driven by the project's models (``torch-lm-compress`` /
``torch-lm-decompress``): an arithmetic (range) coder spends -log2 p bits on each character, p the
model's probability of it given the characters before it, so a model's cross-entropy becomes a
file's size.

    predictors.py   every model as a ``Predictor`` that sees a text one character at a time
    models.py       the model kinds, their settings (packed into the header) and how each is built
    coder.py        the range coder (constriction) under float64 distributions
    container.py    the file: header, coded words, checksums; one-line refusals
    codec.py        compress / decompress: one loop, run by both sides
    table.py        bytes, bits per character and times of every model against general compressors

Decoding is exact only if the decoder computes, for every character, the distribution the encoder
used, bit for bit. So the encoder runs the decoder's loop: the same predictor, one character at a
time, on the thread counts the header records; the text's checksum in the header refuses any
decoded text that differs.
"""
