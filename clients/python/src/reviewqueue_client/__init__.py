"""A small client for the labels feed of a reviewqueue server.

    from reviewqueue_client import FileCursorStore, ReviewQueueClient

    client = ReviewQueueClient("https://reviews.example.com", token)
    store = FileCursorStore("state/labels.cursor")
    for page in client.label_pages(store=store, model="credit-default:3"):
        write(page.labels)      # the cursor is saved once the page is done

No Django, no server code: only ``requests`` (and ``pyarrow``/``pandas`` for the
columnar reads, as the extras ``arrow`` and ``pandas``).
"""

__version__ = "0.1.0"

from .client import (
    ArrowLabels,
    ConsumeResult,
    LabelPage,
    PandasLabels,
    RawPage,
    ReviewQueueClient,
    decode_nested,
    features_frame,
)
from .cursor import CursorStore, FileCursorStore, MemoryCursorStore
from .errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IncompleteResponse,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RetriesExhausted,
    ReviewQueueError,
    TransientError,
)
from .retry import RetryPolicy

__all__ = [
    "ApiError",
    "ArrowLabels",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ConsumeResult",
    "CursorStore",
    "FileCursorStore",
    "IncompleteResponse",
    "LabelPage",
    "MemoryCursorStore",
    "NotFoundError",
    "PandasLabels",
    "PermissionDeniedError",
    "ProtocolError",
    "RawPage",
    "RetriesExhausted",
    "RetryPolicy",
    "ReviewQueueClient",
    "ReviewQueueError",
    "TransientError",
    "__version__",
    "decode_nested",
    "features_frame",
]
