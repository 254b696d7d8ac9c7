"""The canonical JSON of a prediction's parts and its content hash (no Django).

Each part is encoded once: the same text serves the content hash and, on PostgreSQL,
the insert. Stored hashes depend on this text, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .validation import CleanPrediction

# The canonical text of the content hash: sorted keys, no spaces, non-ASCII as is.
canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Encoded:
    """The canonical JSON text of a clean prediction's parts, encoded once."""

    features: str
    context: str
    label: str
    probabilities: str
    attributions: str

    @classmethod
    def of(cls, clean: CleanPrediction) -> Encoded:
        return cls(
            features=canonical_json(clean.features),
            context=canonical_json(clean.context),
            label=canonical_json(clean.label),
            probabilities=canonical_json(clean.probabilities),
            attributions=canonical_json(clean.attributions),
        )


def content_digest(*, producer_id: int | None, model_version_id: int, encoded: Encoded) -> str:
    """SHA-256 of the prediction's content as the producer sent it to this model.

    Byte for byte ``json.dumps(payload, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` of the payload below, assembled from parts already encoded:
    the keys are written in sorted order.
    """
    producer = "null" if producer_id is None else int(producer_id)
    text = (
        f'{{"attributions":{encoded.attributions},"context":{encoded.context},'
        f'"features":{encoded.features},"label":{encoded.label},'
        f'"model":{int(model_version_id)},"probabilities":{encoded.probabilities},'
        f'"producer":{producer}}}'
    )
    return hashlib.sha256(text.encode()).hexdigest()
