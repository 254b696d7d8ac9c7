"""The routing module on its own: no database, no Django."""

import math

import pytest

from apps.registry import routing
from apps.registry.spec import iso_duration_seconds

FEATURES = {
    "income": {"type": "numeric"},
    "region": {"type": "categorical", "categories": ["n", "s"]},
    "owner": {"type": "boolean"},
    "debt.ratio": {"type": "numeric"},
    "mean radius": {"type": "numeric"},
}


def policy(**raw):
    return routing.parse_policy(raw, features=FEATURES, parse_duration=iso_duration_seconds)


def decide(p, *, features=None, context=None, probabilities=None, external_id="x-1"):
    return routing.route(
        p,
        model_key="m:1",
        external_id=external_id,
        features=features or {"income": 10.0, "region": "n", "owner": False, "debt.ratio": 0.1},
        context=context or {},
        probabilities=probabilities or {"a": 0.95, "b": 0.05},
    )


def rule(field, op, value=None, reason="r"):
    entry = {"field": field, "op": op, "reason": reason}
    if value is not None:
        entry["value"] = value
    return entry


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("==", 5, 5, True),
        ("==", 5, 5.0, True),
        ("==", 5, 6, False),
        ("==", "web", "web", True),
        ("==", True, 1, False),  # a boolean is never a number
        ("==", 1, True, False),
        ("!=", 5, 6, True),
        ("!=", 5, 5, False),
        ("!=", "a", 1, True),
        ("<", 10, 9.5, True),
        ("<", 10, 10, False),
        ("<=", 10, 10, True),
        ("<=", 10, 10.01, False),
        (">", 10, 10.01, True),
        (">", 10, 10, False),
        (">=", 10, 10, True),
        (">=", 10, 9.99, False),
        (">=", 10, "11", False),  # a string does not compare with a number
        (">=", "m", "z", True),
        ("<", 10, True, False),
        ("in", ["web", "app"], "web", True),
        ("in", ["web", "app"], "post", False),
        ("in", [1, 2], True, False),
        ("not_in", ["web"], "app", True),
        ("not_in", ["web"], "web", False),
        ("exists", True, None, True),
        ("exists", False, None, False),
    ],
)
def test_each_operator_on_a_context_field(op, value, actual, expected):
    # given a policy with one rule on context.amount
    p = policy(risk_rules=[rule("context.amount", op, value, reason="hit")])
    # when a prediction carries that context value
    d = decide(p, context={"amount": actual})
    # then the rule matches exactly when the operator says so
    assert d.routed is expected
    assert d.reasons == (("hit",) if expected else ())


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("==", 1, False),
        ("!=", 1, False),
        ("<", 1, False),
        ("in", [1], False),
        ("not_in", [1], False),
        ("exists", True, False),
        ("exists", False, True),
    ],
)
def test_a_missing_field_matches_only_exists_false(op, value, expected):
    p = policy(risk_rules=[rule("context.amount", op, value)])
    assert decide(p, context={"other": 1}).routed is expected


def test_nested_context_paths_and_dotted_feature_names():
    p = policy(
        risk_rules=[
            rule("context.customer.tier", "==", "gold", reason="gold"),
            rule("features.debt.ratio", ">", 0.5, reason="debt"),
        ]
    )
    d = decide(
        p,
        context={"customer": {"tier": "gold"}},
        features={"income": 1.0, "region": "n", "owner": True, "debt.ratio": 0.7},
    )
    assert d.reasons == ("gold", "debt")
    assert decide(p, context={"customer": "gold"}).routed is False


def test_a_feature_name_with_spaces_can_be_named_by_a_rule():
    p = policy(risk_rules=[rule("features.mean radius", ">=", 20, reason="large")])
    d = decide(p, features={"mean radius": 25.0})
    assert d.reasons == ("large",)


def test_low_confidence_routes_below_the_threshold_only():
    p = policy(min_confidence=0.8)
    assert decide(p, probabilities={"a": 0.79, "b": 0.21}).reasons == ("low_confidence",)
    assert decide(p, probabilities={"a": 0.8, "b": 0.2}).routed is False


def test_every_reason_together_and_the_shortest_sla_wins():
    # given low confidence and two matching rules with their own SLAs
    p = policy(
        min_confidence=0.9,
        risk_rules=[
            rule("context.amount", ">=", 10000, reason="high_amount"),
            rule("features.region", "in", ["s"], reason="region_s"),
            rule("features.owner", "==", True, reason="high_amount"),
        ],
        sla={"default": "PT4H", "high_amount": "PT1H", "low_confidence": "PT2H"},
        audit_rate=1.0,
    )
    # when all of them apply
    d = decide(
        p,
        context={"amount": 20000},
        features={"income": 1.0, "region": "s", "owner": True, "debt.ratio": 0.0},
        probabilities={"a": 0.6, "b": 0.4},
    )
    # then each reason is reported once, the audit sample is not needed
    assert d.reasons == ("low_confidence", "high_amount", "region_s")
    assert d.selection_probability == 1.0
    assert d.sla_seconds == 3600
    # and risk counts matched rules, with uncertainty breaking ties
    assert d.priority == pytest.approx(3 + 0.4)


def test_default_sla_applies_when_no_reason_has_its_own():
    p = policy(min_confidence=0.9, sla={"default": "PT30M"})
    assert decide(p, probabilities={"a": 0.5, "b": 0.5}).sla_seconds == 1800
    p = policy(min_confidence=0.9)
    assert decide(p, probabilities={"a": 0.5, "b": 0.5}).sla_seconds == 24 * 3600


def test_audit_sample_rate_is_within_statistical_bounds_over_10000_ids():
    # given a 2% audit rate and only confident predictions
    rate, n = 0.02, 10_000
    p = policy(audit_rate=rate)
    # when 10,000 distinct ids are routed
    picked = [decide(p, external_id=f"app-{i}") for i in range(n)]
    sampled = [d for d in picked if d.routed]
    # then about 2% are sampled: within 4 standard deviations of the binomial mean
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(len(sampled) - n * rate) < 4 * sd
    assert all(d.reasons == ("audit_sample",) for d in sampled)
    assert all(d.selection_probability == rate for d in sampled)


def test_audit_sample_is_deterministic_and_depends_on_model_and_id():
    p = policy(audit_rate=0.5)
    first = [decide(p, external_id=f"id-{i}").routed for i in range(200)]
    again = [decide(p, external_id=f"id-{i}").routed for i in range(200)]
    assert first == again
    other_model = [
        routing.route(
            p,
            model_key="m:2",
            external_id=f"id-{i}",
            features={},
            context={},
            probabilities={"a": 1.0},
        ).routed
        for i in range(200)
    ]
    assert other_model != first


def test_audit_rate_zero_and_one():
    assert not any(decide(policy(audit_rate=0.0), external_id=str(i)).routed for i in range(100))
    assert all(decide(policy(audit_rate=1.0), external_id=str(i)).routed for i in range(100))


def test_confident_items_with_no_rule_go_through():
    d = decide(policy(min_confidence=0.5))
    assert d == routing.Decision(routed=False)


@pytest.mark.parametrize(
    ("raw", "bad_field"),
    [
        ({"min_confidence": 1.5}, "routing.min_confidence"),
        ({"min_confidence": "high"}, "routing.min_confidence"),
        ({"audit_rate": -0.1}, "routing.audit_rate"),
        ({"audit_rate": True}, "routing.audit_rate"),
        ({"queue": "no spaces"}, "routing.queue"),
        ({"surprise": 1}, "routing.surprise"),
        ({"risk_rules": {}}, "routing.risk_rules"),
        ({"risk_rules": [rule("context.a", "~=", 1)]}, "routing.risk_rules.0.op"),
        ({"risk_rules": [rule("context.a", "__import__('os')", 1)]}, "routing.risk_rules.0.op"),
        ({"risk_rules": [rule("user.password", "==", 1)]}, "routing.risk_rules.0.field"),
        ({"risk_rules": [rule("features.nope", "==", 1)]}, "routing.risk_rules.0.field"),
        ({"risk_rules": [rule("features.region", "==", "w")]}, "routing.risk_rules.0.value"),
        ({"risk_rules": [rule("features.region", "<", "s")]}, "routing.risk_rules.0.value"),
        ({"risk_rules": [rule("features.income", "==", "rich")]}, "routing.risk_rules.0.value"),
        ({"risk_rules": [rule("features.owner", "==", 1)]}, "routing.risk_rules.0.value"),
        ({"risk_rules": [rule("context.a", "in", "abc")]}, "routing.risk_rules.0.value"),
        ({"risk_rules": [rule("context.a", "in", [])]}, "routing.risk_rules.0.value"),
        ({"risk_rules": [rule("context.a", "<", [1])]}, "routing.risk_rules.0.value"),
        ({"risk_rules": [rule("context.a", "==")]}, "routing.risk_rules.0.value"),
        ({"risk_rules": [rule("context.a", "exists", "yes")]}, "routing.risk_rules.0.value"),
        (
            {"risk_rules": [rule("context.a", "==", 1, reason="Bad Reason")]},
            "routing.risk_rules.0.reason",
        ),
        (
            {"risk_rules": [rule("context.a", "==", 1, reason="audit_sample")]},
            "routing.risk_rules.0.reason",
        ),
        (
            {"risk_rules": [{**rule("context.a", "==", 1), "extra": 1}]},
            "routing.risk_rules.0.extra",
        ),
        ({"sla": {"default": "4 hours"}}, "routing.sla.default"),
        ({"sla": {"default": "PT0S"}}, "routing.sla.default"),
        ({"sla": {"typo_reason": "PT1H"}}, "routing.sla.typo_reason"),
        ({"sla": "PT1H"}, "routing.sla"),
    ],
)
def test_invalid_policies_name_the_bad_field(raw, bad_field):
    with pytest.raises(routing.PolicyError) as caught:
        policy(**raw)
    assert bad_field in caught.value.details


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(routing.PolicyError) as caught:
        policy(min_confidence=2, audit_rate=2, risk_rules=[rule("x", "?", 1, reason="")])
    assert set(caught.value.details) >= {
        "routing.min_confidence",
        "routing.audit_rate",
        "routing.risk_rules.0.field",
        "routing.risk_rules.0.op",
        "routing.risk_rules.0.reason",
    }


def test_the_module_imports_no_django():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(routing))
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not any(name.startswith(("django", "apps", "rest_framework")) for name in imported)
    assert "eval(" not in inspect.getsource(routing)
