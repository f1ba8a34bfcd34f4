"""The monitor-writer contract (docs/contract.md, version 1): file names, the writer, and the reader.

No torch here: the Textual monitor imports this package on login nodes and over slow SSH.
"""

from trainer.monitor.schema import (
    CONTRACT_VERSION,
    FINAL_STATUSES,
    STATUSES,
    Files,
)

__all__ = ["CONTRACT_VERSION", "FINAL_STATUSES", "STATUSES", "Files"]
