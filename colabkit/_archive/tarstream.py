"""A decompressed tar, read forward in blocks, as tarfile's seekable mode reads a file.

Why not tarfile's own stream mode ("r|"): it reads a pax or GNU long-name
header whole, at the size that header declares, so a 2 MB tar.gz declaring a
2 GiB header (gzip's zeros) took 6 GB of memory before any member was judged,
enough to kill a Colab runtime. Here every read is capped (`MAX_READ`).
tarfile ("r:") gets slices of the decompressor's blocks, only ever moving
forward, which is all a gzip, bzip2 or xz stream can do; that also parses
about 10 % faster than stream mode's own buffer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ArchiveTooLargeError

BLOCK = 128 << 10  # read1 allocates this much per call; 1 MiB was 6 % slower
MAX_READ = 16 << 20  # the largest single read: members are copied in COPY_BLOCK (1 MiB) pieces


class Forward:
    """Read-only, forward-only file over `stream`; `compressed` is for the ratio cap.

    `compressed` is `raw.tell()` taken before the block being read was decompressed: never more
    than the archive bytes behind what has been read, so the ratio cap is as strict as reading
    without blocks.
    """

    def __init__(self, stream: Any, raw: Any, archive: Path) -> None:
        self.stream, self.raw, self.archive = stream, raw, archive
        self.block, self.start, self.pos = b"", 0, 0
        self.compressed = 0

    def _refill(self) -> bool:
        self.compressed = self.raw.tell()
        # read1: one decompressor call, so data before bytes that fail (junk after a gzip stream) is kept
        block = self.stream.read1(BLOCK)
        if not block:
            return False
        self.start += len(self.block)
        self.block = block
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_READ:
            raise ArchiveTooLargeError(
                f"{self.archive.name} has a header that declares {size:,} bytes, far past any real one "
                "(a possible archive bomb); extraction stopped and nothing was kept. The archive is "
                "malformed or hostile; get it from a source you trust."
            )
        while self.pos >= self.start + len(self.block):
            if not self._refill():
                return b""
        at = self.pos - self.start
        data = self.block[at:at + size]
        while len(data) < size and self._refill():
            data += self.block[:size - len(data)]
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < self.start:  # tarfile only moves on, or back by one byte
            raise OSError(f"cannot seek back to {offset} in a compressed stream")
        self.pos = offset
        return offset

    def tell(self) -> int:
        return self.pos
