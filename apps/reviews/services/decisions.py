"""Decisions and escalations by reviewers, under their lease.

Each write is one transaction: a compare-and-set on the caller's live lease moves the
item on, the Decision or Escalation row is inserted, and the audit event is appended
last. A lost lease changes nothing (409). A decided item never comes back: no path
moves an item out of ``decided``, and a Decision is unique per item.
"""

import re
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.audit.models import Action
from apps.audit.services import Event, audit_append
from apps.core.db import CurrentTransactionId
from apps.core.exceptions import ValidationFailed
from apps.registry.models import ReasonCode
from apps.reviews.models import (
    MAX_COMMENT,
    Decision,
    DecisionSource,
    Escalation,
    ItemStatus,
    ReviewItem,
)

from .leases import lease_end, review_item_visible
from .webhook_events import webhooks_items_escalated, webhooks_prediction_decided

REASON_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def check_comment(comment: object, field: str = "comment") -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT or "\x00" in comment:
        raise ValidationFailed(
            "Bad comment.", details={field: f"must be text of at most {MAX_COMMENT} characters"}
        )
    return comment


def check_label(item: ReviewItem, label: object) -> str:
    labels = item.prediction.model_version.labels
    if not isinstance(label, str) or label not in labels:
        raise ValidationFailed("Unknown label.", details={"label": f"must be one of {labels!r}"})
    return label


def check_reason_code(item: ReviewItem, reason_code: object, *, required: bool) -> str:
    model_name = item.prediction.model_version.name
    if reason_code in (None, ""):
        if required:
            raise ValidationFailed(
                "An override needs a reason code.",
                details={"reason_code": "required when the label differs from the model's"},
            )
        return ""
    known = ReasonCode.objects.filter(model_name=model_name, code=reason_code, active=True)
    if not isinstance(reason_code, str) or not known.exists():
        codes = list(
            ReasonCode.objects.filter(model_name=model_name, active=True).values_list(
                "code", flat=True
            )
        )
        raise ValidationFailed(
            "Unknown reason code.",
            details={"reason_code": f"must be one of the model's reason codes: {codes!r}"},
        )
    return reason_code


def decision_record(
    *,
    item: ReviewItem,
    user,
    label: str,
    source: str,
    reason_code: str,
    comment: str,
    now: datetime,
) -> Decision:
    """Insert the decision and its audit event; the caller has moved the item to
    ``decided`` under a compare-and-set in the same transaction."""
    overridden = label != item.prediction.label
    decision = Decision.objects.create(
        item=item,
        label=label,
        source=source,
        decided_by=user,
        overridden=overridden,
        reason_code=reason_code,
        comment=comment,
        decided_at=now,
        txid=CurrentTransactionId(),
    )
    webhooks_prediction_decided(decision=decision)
    action = Action.OVERRIDDEN if overridden else Action.DECIDED
    data = {"label": label, "model_label": item.prediction.label, "source": source}
    if reason_code:
        data["reason_code"] = reason_code
    audit_append(events=[Event(action, user, item.id, item.prediction_id, data)], at=now)
    return decision


def review_item_decide(
    *,
    user,
    item_id: int,
    token: object,
    label: object,
    reason_code: object = None,
    comment: object = None,
) -> ReviewItem:
    """Accept (the model's label) or override (another label, with a reason code)."""
    item = review_item_visible(user=user, item_id=item_id)
    label = check_label(item, label)
    overridden = label != item.prediction.label
    reason_code = check_reason_code(item, reason_code, required=overridden)
    comment = check_comment(comment)
    now = timezone.now()
    with transaction.atomic():
        lease_end(user=user, item=item, token=token, status=ItemStatus.DECIDED, now=now)
        decision_record(
            item=item,
            user=user,
            label=label,
            source=DecisionSource.REVIEWER,
            reason_code=reason_code,
            comment=comment,
            now=now,
        )
    return item


def review_item_escalate(
    *, user, item_id: int, token: object, reason: object, comment: object = None
) -> ReviewItem:
    """Hand the item to escalation managers with a reason."""
    item = review_item_visible(user=user, item_id=item_id)
    if not isinstance(reason, str) or not REASON_RE.match(reason):
        raise ValidationFailed(
            "Bad escalation reason.",
            details={"reason": "must be snake_case, 1-64 characters, starting with a letter"},
        )
    comment = check_comment(comment)
    now = timezone.now()
    with transaction.atomic():
        lease_end(user=user, item=item, token=token, status=ItemStatus.ESCALATED, now=now)
        Escalation.objects.create(
            item=item,
            reason=reason,
            comment=comment,
            raised_by=user,
            raised_at=now,
            lateness_seconds=max(0.0, (now - item.due_at).total_seconds()),
        )
        webhooks_items_escalated(item_ids=[item.id], at=now)
        audit_append(
            events=[Event(Action.ESCALATED, user, item.id, item.prediction_id, {"reason": reason})],
            at=now,
        )
    return item
