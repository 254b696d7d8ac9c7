"""Form fields of the review screens. They check shape only (presence, length); the
services decide what is allowed (labels, reason codes, leases), as for the API."""

from django import forms


class LeaseForm(forms.Form):
    lease_token = forms.CharField(max_length=100)


class DecideForm(LeaseForm):
    label = forms.CharField(max_length=200)
    reason_code = forms.CharField(required=False, max_length=64)
    comment = forms.CharField(required=False, max_length=5000, strip=False)


class EscalateForm(LeaseForm):
    reason = forms.CharField(max_length=64)
    comment = forms.CharField(required=False, max_length=5000, strip=False)


class ResolveForm(forms.Form):
    label = forms.CharField(max_length=200)
    comment = forms.CharField(required=False, max_length=5000, strip=False)
    lease_token = forms.CharField(required=False, max_length=100)


class ReturnForm(forms.Form):
    comment = forms.CharField(required=False, max_length=5000, strip=False)
    lease_token = forms.CharField(required=False, max_length=100)


class StartForm(forms.Form):
    queue = forms.CharField(required=False, max_length=100)
