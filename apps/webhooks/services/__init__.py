"""Webhook services, one module per concern.

- ``subscriptions``: admin-managed subscriptions (create, update, rotate the secret)
  and the checks of their URL and events.
- ``outbox``: deliveries written in the transaction of the change they report, their
  messages sent after commit, and the sweeper's list of due deliveries.
- ``delivery``: one attempt at a delivery (claim, signed HTTP request, outcome) and
  the backoff between attempts.

``apps/webhooks/outbound.py`` is the HTTP client and its address guard.
"""
