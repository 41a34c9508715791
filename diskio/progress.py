"""Progress of one disk transfer, as heartbeated to Temporal.

``providers.base`` re-exports this class, so that ``diskio`` never imports providers.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TransferProgress:
    """Progress of one disk transfer; ``checkpoint`` is a compact list of done byte ranges.

    ``bytes_total`` counts the allocated bytes to move and ``bytes_done`` those already moved
    (or found to be zero). ``checkpoint`` lists merged ``(offset, length)`` ranges that need
    no more work, holes included, so it stays a handful of ranges whatever the disk layout.
    """

    bytes_done: int
    bytes_total: int
    checkpoint: list[tuple[int, int]] = field(default_factory=list)
