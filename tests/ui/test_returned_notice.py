"""The review screen tells a case's next reviewer what the escalation manager wrote when
returning it (the item's latest return, read with the case), escaped, and never who."""

import re

import pytest
from django.test import Client

from apps.accounts.services import account_upsert
from apps.reviews.models import Escalation, ReviewItem

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"


def login_client(username: str, *roles: str) -> Client:
    """A browser session of a new account holding ``roles``."""
    account_upsert(username=username, roles=roles, queues=(), password=PASSWORD)
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


def token_of(html: str) -> str:
    return re.search(r'name="lease_token" value="([0-9a-f-]{36})"', html).group(1)


def test_the_next_reviewer_sees_the_comment_of_a_returned_escalation(routed_items):
    # given an item escalated by one reviewer (who is handed the next case at once),
    # and more items due later
    first, _, third = routed_items(3)
    ReviewItem.objects.filter(id=first).update(due_at="2000-01-01T00:00:00Z")
    one = login_client("rev-ret-1", "reviewer")
    html = one.post("/queues/start/", follow=True).content.decode()
    assert 'id="returned-notice"' not in html
    one.post(f"/review/{first}/escalate/", {"lease_token": token_of(html), "reason": "unsure"})
    escalation = Escalation.objects.get(item_id=first)
    # and a manager who returns it with a comment that is markup
    manager = login_client("mgr-ret", "escalation_manager")
    manager.post(f"/escalations/{escalation.id}/claim/")
    page = manager.get(f"/escalations/{escalation.id}/").content.decode()
    assert 'maxlength="5000"' in page  # the services' limit, from the one constant
    note = '<script>window.__xss=1</script> the income is "monthly"'
    manager.post(
        f"/escalations/{escalation.id}/return/", {"comment": note, "lease_token": token_of(page)}
    )
    # when another reviewer starts reviewing
    two = login_client("rev-ret-2", "reviewer")
    html = two.post("/queues/start/", follow=True).content.decode()
    # then their screen shows the case with the manager's comment, escaped, and not who
    assert token_of(html) == str(ReviewItem.objects.get(id=first).lease_token)
    notice = re.search(r'<section class="notice" id="returned-notice".*?</section>', html, re.S)
    assert notice is not None
    assert "Returned from escalation" in notice.group(0)
    assert (
        '<blockquote class="comment" id="returned-comment">&lt;script&gt;window.__xss=1'
        "&lt;/script&gt; the income is &quot;monthly&quot;</blockquote>" in notice.group(0)
    )
    assert "<script>window.__xss" not in html
    assert "mgr-ret" not in html
    assert 'maxlength="5000"' in html
    # when they accept it, the next case carries no notice
    html = two.post(
        f"/review/{first}/decide/", {"lease_token": token_of(html), "label": "approve"}, follow=True
    ).content.decode()
    assert token_of(html) == str(ReviewItem.objects.get(id=third).lease_token)
    assert 'id="returned-notice"' not in html
