"""Faults that happen to real files, made on purpose for the tests."""


def corrupt_body(jpeg: bytes) -> bytes:
    """A JPEG that passes the byte check (its start and end markers are intact) but that no decoder
    reads: its Huffman table is overwritten, as a damaged disk block would."""
    table = jpeg.index(b"\xff\xc4")  # DHT marker
    return jpeg[:table + 4] + b"\xff" * 36 + jpeg[table + 40:]
