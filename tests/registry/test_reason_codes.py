"""The registry's override reasons: made and kept by one service."""

import pytest

from apps.registry.models import ReasonCode
from apps.registry.services import reason_code_upsert

pytestmark = pytest.mark.django_db


def test_reason_code_upsert_creates_once_and_reactivates():
    # given a reason code made, then switched off by an admin
    first = reason_code_upsert(model_name="credit-default", code="stale_income", description="a")
    ReasonCode.objects.filter(id=first.id).update(active=False)
    # when it is upserted again with another description
    again = reason_code_upsert(model_name="credit-default", code="stale_income", description="b")
    # then it is the same row, active again, with the new description
    assert again.id == first.id
    assert ReasonCode.objects.filter(model_name="credit-default").count() == 1
    stored = ReasonCode.objects.get(id=first.id)
    assert (stored.active, stored.description) == (True, "b")
    # and the same code of another model is another reason
    other = reason_code_upsert(model_name="breast-cancer", code="stale_income")
    assert other.id != first.id
