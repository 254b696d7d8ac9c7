"""The error a pure validator raises: what is wrong, field by field. A pure module.

The API layer turns ``details`` into the contract's 400 body
(``apps.core.exceptions.ValidationFailed``), naming every bad field at once.
"""


class Invalid(ValueError):
    """The input is invalid; ``details`` maps each bad field's path to what is wrong."""

    def __init__(self, details: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in details.items()))
        self.details = details
