"""Routing: does a prediction go through, or wait for a human? A pure module.

No Django here and no ``eval``: a policy is parsed once into plain data, and rules are
evaluated by a fixed table of operators. The same input always gives the same
decision, including the audit sample, which is drawn from a hash of the model and the
external id rather than from a random generator.

Decision rules:
- ``low_confidence``: the top class probability is below ``min_confidence``.
- a risk rule's ``reason``: the rule matches ``features.<name>`` or ``context.<path>``.
- ``audit_sample``: none of the above, and the item falls in the deterministic
  ``audit_rate`` sample.
A routed prediction records the probability with which it was selected: 1.0 when
low confidence or a rule chose it, ``audit_rate`` when the audit sample did.
Its SLA is the shortest among its reasons (``sla[reason]``, else ``sla["default"]``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LOW_CONFIDENCE = "low_confidence"
AUDIT_SAMPLE = "audit_sample"
BUILTIN_REASONS = frozenset({LOW_CONFIDENCE, AUDIT_SAMPLE})

ORDERING_OPS = frozenset({"<", "<=", ">", ">="})
MEMBERSHIP_OPS = frozenset({"in", "not_in"})
OPERATORS = frozenset({"==", "!=", "exists"}) | ORDERING_OPS | MEMBERSHIP_OPS

_REASON_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# A feature name is the whole rest of the path (it may hold dots or spaces); a context
# path descends by dots.
_FIELD_RE = re.compile(r"^(?:features\.[^\x00]+|context(?:\.[^.\s]+)+)$")
_POLICY_KEYS = frozenset({"min_confidence", "risk_rules", "audit_rate", "sla", "queue"})
_RULE_KEYS = frozenset({"field", "op", "value", "reason"})
_MISSING = object()


class PolicyError(ValueError):
    """The policy is invalid; ``details`` maps each bad field's path to what is wrong."""

    def __init__(self, details: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in details.items()))
        self.details = details


@dataclass(frozen=True)
class Rule:
    field: str
    scope: str  # "features" or "context"
    path: tuple[str, ...]
    op: str
    value: Any
    reason: str


@dataclass(frozen=True)
class Policy:
    min_confidence: float | None
    rules: tuple[Rule, ...]
    audit_rate: float
    sla_seconds: Mapping[str, float]
    queue: str
    default_sla_seconds: float = 24 * 3600.0

    def sla_for(self, reason: str) -> float:
        return self.sla_seconds.get(
            reason, self.sla_seconds.get("default", self.default_sla_seconds)
        )


@dataclass(frozen=True)
class Decision:
    routed: bool
    reasons: tuple[str, ...] = ()
    selection_probability: float | None = None
    priority: float = 0.0
    sla_seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    """A number that is not NaN or infinite; an int of any size is finite (and
    ``math.isfinite`` would overflow converting a huge one to float)."""
    return _is_number(value) and (isinstance(value, int) or math.isfinite(value))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool) or _is_finite_number(value)


def _same(a: Any, b: Any) -> bool:
    """Equality that never equates values of different kinds (``True`` is not ``1``)."""
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _ordered(a: Any, b: Any) -> bool:
    return (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if op == "==":
        return _same(actual, expected)
    if op == "!=":
        return not _same(actual, expected)
    if op in MEMBERSHIP_OPS:
        found = any(_same(actual, v) for v in expected)
        return found if op == "in" else not found
    if not _ordered(actual, expected):
        return False
    if op == "<":
        return actual < expected
    if op == "<=":
        return actual <= expected
    if op == ">":
        return actual > expected
    return actual >= expected


def _lookup(rule: Rule, features: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
    node: Any = features if rule.scope == "features" else context
    for key in rule.path:
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def rule_matches(rule: Rule, features: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    """Whether ``rule`` matches. A missing field matches only ``exists: false``."""
    actual = _lookup(rule, features, context)
    if rule.op == "exists":
        return (actual is not _MISSING) == rule.value
    if actual is _MISSING:
        return False
    return _compare(rule.op, actual, rule.value)


def audit_draw(model_key: str, external_id: str) -> float:
    """A uniform number in [0, 1) fixed by the model and the external id."""
    digest = hashlib.sha256(f"{model_key}\x1f{external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def route(
    policy: Policy,
    *,
    model_key: str,
    external_id: str,
    features: Mapping[str, Any],
    context: Mapping[str, Any],
    probabilities: Mapping[str, float],
) -> Decision:
    """Decide whether a prediction waits for a human, and why."""
    confidence = max(probabilities.values()) if probabilities else 0.0
    reasons: list[str] = []
    if policy.min_confidence is not None and confidence < policy.min_confidence:
        reasons.append(LOW_CONFIDENCE)
    rule_hits = 0
    for rule in policy.rules:
        if rule_matches(rule, features, context):
            rule_hits += 1
            if rule.reason not in reasons:
                reasons.append(rule.reason)
    if reasons:
        selection_probability = 1.0
    elif policy.audit_rate > 0 and audit_draw(model_key, external_id) < policy.audit_rate:
        reasons.append(AUDIT_SAMPLE)
        selection_probability = policy.audit_rate
    else:
        return Decision(routed=False)
    return Decision(
        routed=True,
        reasons=tuple(reasons),
        selection_probability=selection_probability,
        # Risk: each matched rule counts one, uncertainty breaks ties.
        priority=rule_hits + (1.0 - confidence),
        sla_seconds=min(policy.sla_for(r) for r in reasons),
    )


def parse_policy(
    raw: Any,
    *,
    features: Mapping[str, Mapping[str, Any]],
    parse_duration: Callable[[str], float | None],
    default_sla_seconds: float = 24 * 3600.0,
    prefix: str = "routing",
) -> Policy:
    """Validate a policy as registered and compile it.

    ``features`` maps feature names to their schema entries (``type``, ``categories``);
    ``parse_duration`` turns an ISO 8601 duration into seconds, or None if invalid.
    Raises PolicyError naming every bad field.
    """
    errors: dict[str, str] = {}
    if not isinstance(raw, Mapping):
        raise PolicyError({prefix: "must be an object"})
    for key in sorted(set(raw) - _POLICY_KEYS):
        errors[f"{prefix}.{key}"] = "unknown field"

    min_confidence = raw.get("min_confidence")
    if min_confidence is not None and not (
        _is_number(min_confidence) and 0.0 <= min_confidence <= 1.0
    ):
        errors[f"{prefix}.min_confidence"] = "must be a number between 0 and 1"

    audit_rate = raw.get("audit_rate", 0.0)
    if not (_is_number(audit_rate) and 0.0 <= audit_rate <= 1.0):
        errors[f"{prefix}.audit_rate"] = "must be a number between 0 and 1"

    queue = raw.get("queue", "default")
    if not isinstance(queue, str) or not _QUEUE_RE.match(queue):
        errors[f"{prefix}.queue"] = "must be a queue name (letters, digits, '_', '.', '-')"

    rules = _parse_rules(raw.get("risk_rules", []), features, errors, f"{prefix}.risk_rules")
    known_reasons = BUILTIN_REASONS | {r.reason for r in rules} | {"default"}

    sla_seconds: dict[str, float] = {}
    sla = raw.get("sla", {})
    if not isinstance(sla, Mapping):
        errors[f"{prefix}.sla"] = "must be an object of ISO 8601 durations by reason"
    else:
        for reason, text in sla.items():
            path = f"{prefix}.sla.{reason}"
            if reason not in known_reasons:
                errors[path] = "not a routing reason of this policy"
                continue
            seconds = parse_duration(text) if isinstance(text, str) else None
            if seconds is None or seconds <= 0:
                errors[path] = "must be a positive ISO 8601 duration such as PT4H"
            else:
                sla_seconds[reason] = seconds

    if errors:
        raise PolicyError(errors)
    return Policy(
        min_confidence=None if min_confidence is None else float(min_confidence),
        rules=tuple(rules),
        audit_rate=float(audit_rate),
        sla_seconds=sla_seconds,
        queue=queue,
        default_sla_seconds=default_sla_seconds,
    )


def _parse_rules(
    raw: Any,
    features: Mapping[str, Mapping[str, Any]],
    errors: dict[str, str],
    prefix: str,
) -> list[Rule]:
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        errors[prefix] = "must be a list of rules"
        return []
    rules = []
    for i, entry in enumerate(raw):
        path = f"{prefix}.{i}"
        if not isinstance(entry, Mapping):
            errors[path] = "must be an object"
            continue
        before = len(errors)
        for key in sorted(set(entry) - _RULE_KEYS):
            errors[f"{path}.{key}"] = "unknown field"
        field_name, op, reason = entry.get("field"), entry.get("op"), entry.get("reason")
        keys: tuple[str, ...]
        if not isinstance(field_name, str) or not _FIELD_RE.match(field_name):
            errors[f"{path}.field"] = "must be 'features.<name>' or 'context.<path>'"
            scope, keys = "", ()
        else:
            scope, _, rest = field_name.partition(".")
            # A feature name may itself hold dots; a context path descends by them.
            keys = (rest,) if scope == "features" else tuple(rest.split("."))
            if scope == "features" and rest not in features:
                errors[f"{path}.field"] = "names no feature of this model"
        if op not in OPERATORS:
            errors[f"{path}.op"] = f"must be one of {', '.join(sorted(OPERATORS))}"
        elif (message := _value_error(op, entry.get("value", _MISSING))) is not None:
            errors[f"{path}.value"] = message
        elif scope == "features" and keys and keys[0] in features:
            message = _feature_value_error(op, entry.get("value"), features[keys[0]])
            if message:
                errors[f"{path}.value"] = message
        if not isinstance(reason, str) or not _REASON_RE.match(reason):
            errors[f"{path}.reason"] = "must be snake_case, starting with a letter"
        elif reason in BUILTIN_REASONS:
            errors[f"{path}.reason"] = f"'{reason}' is reserved"
        if len(errors) == before:
            value = entry.get("value", True) if op == "exists" else entry["value"]
            if op in MEMBERSHIP_OPS:
                value = tuple(value)
            rules.append(Rule(field_name, scope, keys, op, value, reason))  # type: ignore[arg-type]
    return rules


def _value_error(op: str, value: Any) -> str | None:
    if op == "exists":
        return None if value is _MISSING or isinstance(value, bool) else "must be true or false"
    if value is _MISSING:
        return "is required"
    if op in MEMBERSHIP_OPS:
        if not isinstance(value, list) or not value or not all(_is_scalar(v) for v in value):
            return "must be a non-empty list of strings, numbers or booleans"
        return None
    if op in ORDERING_OPS:
        ok = isinstance(value, str) or _is_finite_number(value)
        return None if ok else "must be a number or a string"
    return None if _is_scalar(value) else "must be a string, number, boolean or null"


def _feature_value_error(op: str, value: Any, spec: Mapping[str, Any]) -> str | None:
    """Catch rules that can never match the feature's declared type."""
    if op == "exists":
        return None
    values = value if op in MEMBERSHIP_OPS else [value]
    kind = spec.get("type")
    if kind == "numeric" and not all(_is_number(v) for v in values):
        return "must be numeric, like the feature"
    if kind == "boolean" and (op in ORDERING_OPS or not all(isinstance(v, bool) for v in values)):
        return "must be true or false, like the feature"
    if kind == "categorical":
        if op in ORDERING_OPS:
            return "a categorical feature has no order"
        unknown = [v for v in values if v not in spec.get("categories", ())]
        if unknown:
            return f"not a category of the feature: {unknown!r}"
    return None
