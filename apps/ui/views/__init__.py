"""The review screens: server-rendered pages for reviewers and escalation managers.

Every action calls the same service as the API does (``apps.reviews.services``:
claim, heartbeat, release, decide, escalate; escalation claim, resolve, return), so the
lease rules, permissions and validation are the API's. Views only check the role,
shape the form input, call one service and choose the next page. A refusal from a
service (``ApplicationError``) is shown as a page with the same status code the API
would answer.

- ``review``: the reviewer's queues page, the claim, the case screen and its actions
  (decide, escalate, release, heartbeat).
- ``escalations``: the managers' list, one escalation's screen, claim, resolve, return.
- ``overview``: the managers' and admins' figures.
- ``base``: the role check, the refusal page and the case panel the screens share.

Logging in and out are Django's own views (``apps/ui/urls.py``).
"""
