"""Which strings PostgreSQL can store. A pure module.

Text columns and jsonb refuse NUL characters, and UTF-8 cannot encode a lone
surrogate (which a JSON body may spell as ``"\\ud800"``); both are refused at the edge,
naming the field, instead of failing at the INSERT.
"""

TEXT_PROBLEMS = {
    "nul": "must not contain NUL characters",
    "surrogate": "must be valid Unicode (no lone surrogates)",
}


def text_problem(value: str) -> str | None:
    """The key in ``TEXT_PROBLEMS`` of what stops PostgreSQL storing ``value``, or None."""
    if "\x00" in value:
        return "nul"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "surrogate"
    return None


def storable_text_error(value: str) -> str | None:
    """Why PostgreSQL could not store this text, or None."""
    problem = text_problem(value)
    return None if problem is None else TEXT_PROBLEMS[problem]
