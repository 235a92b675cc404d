"""Outcome and stream codes (fastgw/_native/codes.pxd), as Python ints."""
from typing import Final

OUTCOME_OK: Final[int]
OUTCOME_CONNECT: Final[int]
OUTCOME_TIMEOUT: Final[int]
OUTCOME_RESET: Final[int]
OUTCOME_BAD_RESPONSE: Final[int]
OUTCOME_5XX: Final[int]
OUTCOME_CANCELLED: Final[int]
N_OUTCOMES: Final[int]

STREAM_SSE: Final[int]
STREAM_WS: Final[int]
N_STREAM_KINDS: Final[int]

# Indexed by code; also metric label values.
OUTCOME_NAMES: Final[tuple[str, ...]]
STREAM_NAMES: Final[tuple[str, ...]]

# The same outcome codes under the names the Python side uses.
OK: Final[int]
CONNECT_FAILURE: Final[int]
TIMEOUT: Final[int]
RESET: Final[int]
BAD_RESPONSE: Final[int]
STATUS_5XX: Final[int]
CANCELLED: Final[int]
