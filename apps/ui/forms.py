"""Form fields of the review screens. They check shape only (presence, length); the
services decide what is allowed (labels, reason codes, leases), as for the API."""

from django import forms

from apps.reviews.models import MAX_COMMENT


def comment_field() -> forms.CharField:
    """An optional comment, kept as typed, at most ``MAX_COMMENT`` characters (the
    services' limit; the templates' ``maxlength`` is this field's)."""
    return forms.CharField(required=False, max_length=MAX_COMMENT, strip=False)


class LeaseForm(forms.Form):
    lease_token = forms.CharField(max_length=100)


class DecideForm(LeaseForm):
    label = forms.CharField(max_length=200)
    reason_code = forms.CharField(required=False, max_length=64)
    comment = comment_field()


class EscalateForm(LeaseForm):
    reason = forms.CharField(max_length=64)
    comment = comment_field()


class ResolveForm(forms.Form):
    label = forms.CharField(max_length=200)
    comment = comment_field()
    lease_token = forms.CharField(required=False, max_length=100)


class ReturnForm(forms.Form):
    comment = comment_field()
    lease_token = forms.CharField(required=False, max_length=100)


class StartForm(forms.Form):
    queue = forms.CharField(required=False, max_length=100)
