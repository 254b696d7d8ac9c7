"""Reads of the audit trail."""

from collections.abc import Iterator
from dataclasses import dataclass

from .chain import GENESIS, stored_event_hash
from .models import AuditEvent


@dataclass(frozen=True)
class ChainBreak:
    position: int  # 1-based position in the chain
    event_id: int
    problem: str


def audit_chain_verify(*, batch_size: int = 5000) -> tuple[int, ChainBreak | None]:
    """Walk the chain in id order; the number of events checked and the first break."""
    prev_hash, position = GENESIS, 0
    for event in _events(batch_size):
        position += 1
        if event.prev_hash != prev_hash:
            return position, ChainBreak(position, event.id, "does not follow its predecessor")
        expected = stored_event_hash(event)
        if expected != event.hash:
            return position, ChainBreak(position, event.id, "content does not match its hash")
        prev_hash = event.hash
    return position, None


def _events(batch_size: int) -> Iterator[AuditEvent]:
    last_id = 0
    while True:
        batch = list(AuditEvent.objects.filter(id__gt=last_id).order_by("id")[:batch_size])
        yield from batch
        if len(batch) < batch_size:
            return
        last_id = batch[-1].id
