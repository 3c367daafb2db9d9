"""The one CRC-32 flowd writes and checks: zlib's (``meta.lines_crc32``, journal frames).

ISA-L's implementation (the ``isal`` package) gives the same values as
``zlib.crc32`` four times as fast here (448 MiB: 46 against 190 ms, 2 cores),
and, like zlib's, lets go of the GIL over a big buffer. With zlib's, the
body's CRC was about half the CPU of encoding a snapshot, and 0.2-0.28 s of
a million flows' start (on its own thread beside the split). Without the
package (a platform with no wheel for it) the standard library's is used:
the same values, slower.
"""

from __future__ import annotations

try:
    from isal.isal_zlib import crc32
except ImportError:  # isal is a dependency: this is for a platform with no wheel
    from zlib import crc32

__all__ = ["crc32"]
