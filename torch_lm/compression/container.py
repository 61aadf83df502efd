"""The compressed file: a header of a few dozen bytes, the coded words, a checksum.

    magic "TL" | version u8 | model kind u8 | BLAS threads u8 | checkpoint sha256[:4] | settings length u8 |
    settings | text length (LEB128 varint) | CRC-32 of the text's UTF-8 | coded words (uint32 LE) |
    CRC-32 of every byte before it

The model's settings are packed by ``torch_lm.compression.models`` (the container only carries
them). Fingerprints are 4-byte prefixes of sha256: enough to refuse a wrong checkpoint or data
file with certainty to one in four billion, where a full digest would cost more than the coder's
whole overhead on a short text. The final CRC refuses a truncated or corrupted file before any
decoding; the text's CRC refuses a decoded text that differs from the one compressed.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from torch_lm.compression.coder import WORD_BYTES

MAGIC = b"TL"
VERSION = 1
FINGERPRINT_BYTES = 4
MAX_THREADS = 64


class CompressedFileError(ValueError):
    """A file that cannot be decompressed here: not ours, another version, damaged, or made with
    another checkpoint, data or settings. The message is one line."""


@dataclass(frozen=True)
class Header:
    """What a decoder needs besides the checkpoint: the model ``kind`` (its index in
    ``models.KINDS``), the BLAS threads the prediction ran on, its packed ``settings``, the
    checkpoint's fingerprint, the text's length in characters and the CRC-32 of its UTF-8 bytes."""

    kind: int
    threads: int
    settings: bytes
    checkpoint: bytes
    length: int
    text_crc: int


def fingerprint(data: bytes) -> bytes:
    """The first ``FINGERPRINT_BYTES`` of sha256(data)."""
    return hashlib.sha256(data).digest()[:FINGERPRINT_BYTES]


def varint(value: int) -> bytes:
    """LEB128: 7 bits per byte, low first, the high bit set on every byte but the last."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class Reader:
    """Bytes read front to back; reading past the end is a truncated file."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise CompressedFileError("the file is truncated: its header ends early")
        chunk, self.at = self.data[self.at : self.at + n], self.at + n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def f16(self) -> float:
        return float(np.frombuffer(self.take(2), dtype="<f2")[0])

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise CompressedFileError("the file is corrupted: a length field does not end")

    def rest(self) -> bytes:
        return self.data[self.at :]


def pack(header: Header, words: np.ndarray) -> bytes:
    """The file's bytes for ``header`` and the coded ``words`` (W,) uint32."""
    if len(header.settings) > 255 or len(header.checkpoint) != FINGERPRINT_BYTES:
        raise ValueError("pack: settings must fit in 255 bytes and the fingerprint in 4")
    if not 1 <= header.threads <= MAX_THREADS:
        raise ValueError(f"pack: threads must lie in [1, {MAX_THREADS}], got {header.threads}")
    body = b"".join(
        [
            MAGIC,
            bytes([VERSION, header.kind, header.threads]),
            header.checkpoint,
            bytes([len(header.settings)]),
            header.settings,
            varint(header.length),
            struct.pack("<I", header.text_crc),
            np.asarray(words, dtype="<u4").tobytes(),
        ]
    )
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes) -> tuple[Header, np.ndarray]:
    """The header and coded words of a file's bytes, or ``CompressedFileError`` saying in one
    line why not (checked in this order: magic, version, checksum, layout)."""
    if data[: len(MAGIC)] != MAGIC:
        raise CompressedFileError(f"not a torch-lm compressed file (it does not start with {MAGIC.decode()})")
    if len(data) < len(MAGIC) + 1:
        raise CompressedFileError("the file is truncated: it ends before its format version")
    if data[len(MAGIC)] != VERSION:
        raise CompressedFileError(
            f"format version {data[len(MAGIC)]} is unknown: this torch-lm reads version {VERSION}"
        )
    if len(data) < len(MAGIC) + 4 or struct.unpack("<I", data[-4:])[0] != zlib.crc32(data[:-4]):
        raise CompressedFileError("the file is truncated or corrupted: its checksum does not match its bytes")
    reader = Reader(data[:-4])
    reader.take(len(MAGIC) + 1)
    kind, threads = reader.u8(), reader.u8()
    checkpoint = reader.take(FINGERPRINT_BYTES)
    settings = reader.take(reader.u8())
    length = reader.varint()
    (text_crc,) = struct.unpack("<I", reader.take(4))
    payload = reader.rest()
    if len(payload) % WORD_BYTES:
        raise CompressedFileError("the file is corrupted: its coded part is not whole 32-bit words")
    if not 1 <= threads <= MAX_THREADS:
        raise CompressedFileError(f"the file is corrupted: it asks for {threads} threads")
    return Header(kind, threads, settings, checkpoint, length, text_crc), np.frombuffer(payload, dtype="<u4").astype(
        np.uint32
    )


def text_crc(text: str) -> int:
    """CRC-32 of the text's UTF-8 bytes."""
    return zlib.crc32(text.encode("utf-8"))
