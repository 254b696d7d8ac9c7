"""Input fields for the API's request serializers."""

from rest_framework import serializers

from .text import text_problem


class TextField(serializers.CharField):
    """A ``CharField`` for request bodies that takes only JSON strings PostgreSQL can
    store: a number is not coerced to text (``NaN`` or ``12`` where a comment or a
    label belongs is 400), and NUL characters and lone surrogates are refused."""

    default_error_messages = {
        "not_text": "Must be a string.",
        "nul": "Must not contain NUL characters.",
        "surrogate": "Must be valid Unicode (no lone surrogates).",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_text")
        if problem := text_problem(data):
            self.fail(problem)
        return super().to_internal_value(data)
