"""Catalogue, request schema and parse/validate reasons."""

import json

import jsonschema
import pytest

from bench.samples import sample_context
from pipelines.email.catalogue import catalogue, load_catalogue, parse_window
from pipelines.email.dispatch import dispatch
from pipelines.email.request import SCHEMA_PATH, BadRequest, parse_request


def body(**over):
    base = {"request_id": "r-1", "kind": "password-reset",
            "recipients": [{"email": "alice@example.org", "verified": True, "user_id": 7, "name": "Alice",
                            "acting_user": True}],
            "context": {"n_hours": 6, "token": "tok-123456", "username": "alice"}, "remote_ip": "203.0.113.7"}
    base.update(over)
    return base


def test_catalogue_has_warehouse_kinds_plus_billing():
    kinds = catalogue()
    assert len(kinds) == 81
    warehouse = [ln.split("\t")[0] for ln in open("/work/shared/email-kinds.tsv").read().splitlines()[1:] if ln]
    assert set(warehouse) <= set(kinds)
    for k in ("payment-failed", "payment-succeeded", "subscription-canceled", "subscription-past-due",
              "trial-will-end"):
        assert k in kinds
    assert kinds["password-reset"].sensitive == {"token"}
    assert kinds["unrecognized-login"].repeat_window.total_seconds() == 15 * 60
    assert kinds["verify-email"].allow_unverified and not kinds["password-reset"].allow_unverified


def test_catalogue_flags_match_warehouse():
    kinds = catalogue()
    rows = [ln.split("\t") for ln in open("/work/shared/email-kinds.tsv").read().splitlines()[1:] if ln]
    for kind, allow, window, *_ in rows:
        assert kinds[kind].allow_unverified == (allow == "True"), kind
        assert kinds[kind].repeat_window == parse_window(window), kind


def test_catalogue_rejects_undeclared_sensitive(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_text("kind\tallow_unverified\trepeat_window\trequired\toptional\tsensitive\nx\tfalse\t\ta\t\tb\n")
    with pytest.raises(ValueError, match="sensitive variables not declared"):
        load_catalogue(p)


def test_schema_is_valid_and_accepts_sample():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(body(), schema)


def test_parse_good_request():
    r = parse_request(json.dumps(body()))
    assert r.kind == "password-reset" and r.recipients[0].user_id == "7" and r.recipients[0].acting_user
    assert r.repeat_window is None and r.remote_ip == "203.0.113.7"
    assert parse_request(r.to_json()) == r


@pytest.mark.parametrize("raw, reason", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "not a JSON object"),
    (body(kind="no-such-kind"), "unknown kind 'no-such-kind'"),
    (body(context={"n_hours": 6, "username": "a"}), "missing context variable 'token'"),
    (body(context={"n_hours": 6, "token": None, "username": "a"}), "missing context variable 'token'"),
    (body(recipients=[{"email": "not-an-address", "verified": True}]), "malformed address in recipients/0"),
    (body(recipients=[{"email": "a@b.c", "verified": True}, {"email": "x@@y", "verified": True}]),
     "malformed address in recipients/1"),
    (body(recipients=[{"email": "a b@c.d", "verified": True}]), "malformed address"),
    (body(recipients=[{"email": "a@b.c", "verified": True, "name": "A\r\nBcc: x@y.z"}]),
     "header injection refused: line break in recipients/0/name"),
    (body(sender="x@y.z\nBcc: e@f.g"), "header injection refused: line break in sender"),
    (body(sender="nobody"), "malformed address in sender"),
    (body(recipients=[]), "invalid recipients"),
    (body(recipients=[{"email": "a@b.c"}]), "missing field verified at recipients/0"),
    ({k: v for k, v in body().items() if k != "request_id"}, "missing field request_id"),
    (body(repeat_window="soon"), "invalid repeat_window"),
    (body(remote_ip="300.1.1.1"), "malformed remote_ip"),
])
def test_bad_requests_have_clear_reasons(raw, reason):
    with pytest.raises(BadRequest) as err:
        parse_request(raw if isinstance(raw, str) else json.dumps(raw))
    assert reason in err.value.reason


def test_reasons_never_carry_context_values():
    secret = "tok-SECRET-999"
    for bad in (body(kind="nope", context={"token": secret}),
                body(context={"n_hours": 6, "token": secret, "username": ["list"]})):
        with pytest.raises(BadRequest) as err:
            parse_request(json.dumps(bad))
        assert secret not in err.value.reason and secret not in str(err.value)


def test_null_address_is_not_malformed_and_extra_context_dropped():
    r = parse_request(json.dumps(body(recipients=[{"email": None, "verified": True}, {"email": "", "verified": False}],
                                      context={"n_hours": 6, "token": "t", "username": "a", "extra": "x"})))
    assert [x.email for x in r.recipients] == [None, None]
    assert "extra" not in r.context


def test_repeat_window_override():
    assert parse_request(json.dumps(body(repeat_window="2h"))).repeat_window.total_seconds() == 7200
    assert parse_request(json.dumps(body(kind="unrecognized-login", repeat_window="0s",
                                         context={"ip_address": "x", "token": "t", "user_agent": "u",
                                                  "username": "a"}))).repeat_window is None


def test_sample_contexts_pass_validation():
    for spec in catalogue().values():
        for with_optional in (True, False):
            ctx = sample_context(spec, with_optional)
            r = parse_request(json.dumps(body(kind=spec.kind, context=ctx)))
            assert set(r.context) == set(ctx)


class ListQueue:
    def __init__(self):
        self.bodies = []

    def send(self, bodies):
        self.bodies.extend(bodies)
        return len(self.bodies)


def test_dispatch_validates_then_enqueues():
    q = ListQueue()
    rid = dispatch("two-factor-added", [{"email": "a@example.org", "verified": True}],
                   {"method": "totp", "username": "a"}, queue=q, remote_ip="198.51.100.1")
    assert len(q.bodies) == 1
    sent = json.loads(q.bodies[0])
    assert sent["request_id"] == rid and sent["kind"] == "two-factor-added" and sent["remote_ip"] == "198.51.100.1"
    assert parse_request(q.bodies[0]).request_id == rid
    with pytest.raises(ValueError, match="missing context variable 'method'"):
        dispatch("two-factor-added", [{"email": "a@example.org", "verified": True}], {"username": "a"}, queue=q)
    assert len(q.bodies) == 1


def test_fast_path_never_accepts_what_the_schema_rejects():
    import copy
    import random

    from pipelines.email.request import fast_valid, schema_validator

    rnd = random.Random(3)
    values = [None, True, False, 0, 1, -1, 1.5, "", " ", "a b", "x" * 321, "abc\n", "2h", "5 m", "ok-kind",
              "Bad_Kind", [], {}, [1], {"a": 1}, {"a": [1]}, "a@b.c"]
    paths = [("request_id",), ("kind",), ("recipients",), ("context",), ("sender",), ("repeat_window",),
             ("remote_ip",), ("extra",), ("recipients", 0), ("recipients", 0, "email"),
             ("recipients", 0, "verified"), ("recipients", 0, "user_id"), ("recipients", 0, "name"),
             ("recipients", 0, "acting_user"), ("recipients", 0, "other"), ("context", "n_hours")]
    checked = 0
    for _ in range(3000):
        doc = copy.deepcopy(body())
        for _ in range(rnd.randint(1, 2)):
            path = rnd.choice(paths)
            target = doc
            for step in path[:-1]:
                target = target[step] if isinstance(target, (dict, list)) and (
                    isinstance(target, dict) and step in target or isinstance(target, list) and len(target) > step) \
                    else None
                if target is None:
                    break
            if isinstance(target, dict):
                if rnd.random() < 0.15:
                    target.pop(path[-1], None)
                else:
                    target[path[-1]] = rnd.choice(values)
            elif isinstance(target, list) and target:
                target[0] = rnd.choice(values)
        if fast_valid(doc):
            assert schema_validator().is_valid(doc), doc
            checked += 1
    assert checked > 100
