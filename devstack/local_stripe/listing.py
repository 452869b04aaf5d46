"""List objects (limit, starting_after, ending_before, created filters) and search results."""

from __future__ import annotations

import base64
import bisect
import heapq
import re
from collections.abc import Callable
from typing import Any

from devstack.local_stripe.errors import invalid, missing
from devstack.local_stripe.store import Table
from devstack.local_stripe.wire import as_int

Predicate = Callable[[dict[str, Any]], bool]


def created_filter(params: dict[str, Any], name: str = "created") -> dict[str, int]:
    raw = params.get(name)
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):  # created=<ts>: exactly that second
        value = as_int(params, name)
        assert value is not None
        return {"gte": value, "lte": value}
    if not isinstance(raw, dict):
        raise invalid(f"Invalid {name}: an integer or a hash with gt, gte, lt, lte", name)
    out = {}
    for op, value in raw.items():
        if op not in ("gt", "gte", "lt", "lte"):
            raise invalid(f"Received unknown parameter: {name}[{op}]", f"{name}[{op}]")
        out[op] = as_int({op: value}, op)
    return out


def limit_of(params: dict[str, Any]) -> int:
    value = as_int(params, "limit", 10)
    assert value is not None
    if not 1 <= value <= 100:
        raise invalid("Invalid limit: must be between 1 and 100", "limit")
    return value


def list_page(table: Table, params: dict[str, Any], url: str, predicate: Predicate | None = None,
              where: dict[str, list[Any]] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """(objects newest first, has_more). where={indexed field: [values]} walks only the positions
    of objects with those values (the predicate still decides); a page then costs O(limit)."""
    limit = limit_of(params)
    lo, hi = table.bounds(created_filter(params))
    after, before = params.get("starting_after"), params.get("ending_before")
    if after and before:
        raise invalid("You may only specify one of these parameters: ending_before, starting_after.",
                      "ending_before")
    for name, cursor in (("ending_before", before), ("starting_after", after)):
        if cursor and cursor not in table.position:
            raise missing(table.name, cursor, name)
    if after:
        hi = min(hi, table.position[after])
    if before:
        lo = max(lo, table.position[before] + 1)
    if where:
        field, values = next(iter(where.items()))
        lists = [table.positions(field, v) for v in values]
        if before:
            ascending = heapq.merge(*[p[bisect.bisect_left(p, lo):bisect.bisect_left(p, hi)] for p in lists])
            candidates = table.at_positions(ascending)
        else:
            descending = heapq.merge(*[reversed(p[bisect.bisect_left(p, lo):bisect.bisect_left(p, hi)])
                                       for p in lists], reverse=True)
            candidates = table.at_positions(descending)
    else:
        candidates = table.oldest_first(lo, hi) if before else table.newest_first(hi, lo)
    found: list[dict[str, Any]] = []
    for obj in candidates:
        if predicate is None or predicate(obj):
            found.append(obj)
            if len(found) > limit:
                break
    has_more = len(found) > limit
    page = found[:limit]
    return (list(reversed(page)) if before else page), has_more


def list_object(data: list[dict[str, Any]], has_more: bool, url: str) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


# --- search -----------------------------------------------------------------------------------

_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?(?P<field>[a-z_]+)(?:\[(?P<q>['"])(?P<key>[^'"]+)(?P=q)\])?"""
    r"""\s*(?P<op>:|>=|<=|>|<)\s*(?:(?P<vq>['"])(?P<value>.*?)(?P=vq)|(?P<num>-?\d+))\s*""")

SEARCHABLE: dict[str, set[str]] = {
    "customer": {"email", "name", "phone", "metadata", "created"},
    "subscription": {"status", "metadata", "created", "customer"},
    "product": {"active", "name", "description", "metadata", "created", "url", "shippable"},
    "price": {"active", "currency", "lookup_key", "product", "type", "metadata", "created"},
}


def parse_query(query: str, object_name: str) -> list[tuple[bool, str, str | None, str, str]]:
    """[(negated, field, metadata key, op, value)], the subset: field:'v', metadata['k']:'v',
    numeric comparisons on created, clauses joined by AND."""
    if not query or not query.strip():
        raise invalid("Missing required param: query.", "query", code="parameter_missing")
    clauses = []
    for part in re.split(r"\s+AND\s+", query.strip()):
        m = _CLAUSE.fullmatch(part)
        if not m:
            raise invalid(f"Invalid search query: could not parse {part!r} (supported: field:'value', "
                          f"metadata['key']:'value', created>N, joined by AND)", "query")
        field = m.group("field")
        if field not in SEARCHABLE[object_name]:
            raise invalid(f"Invalid search query: {field} is not a searchable field for {object_name} "
                          f"(one of {', '.join(sorted(SEARCHABLE[object_name]))})", "query")
        if (m.group("key") is None) == (field == "metadata"):
            raise invalid(f"Invalid search query: {part!r}", "query")
        value = m.group("value") if m.group("value") is not None else m.group("num")
        clauses.append((bool(m.group("neg")), field, m.group("key"), m.group("op"), value))
    return clauses


def _matches(obj: dict[str, Any], clause: tuple[bool, str, str | None, str, str]) -> bool:
    negated, field, key, op, value = clause
    actual = (obj.get("metadata") or {}).get(key) if key else obj.get(field)
    if isinstance(actual, bool):
        actual = "true" if actual else "false"
    if op == ":":
        ok = actual is not None and str(actual) == value
    else:
        try:
            a, v = int(actual), int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        ok = {">": a > v, "<": a < v, ">=": a >= v, "<=": a <= v}[op]
    return ok != negated


def search_page(table: Table, object_name: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    clauses = parse_query(str(params.get("query") or ""), object_name)
    limit = limit_of(params)
    start = None
    page = params.get("page")
    if page:
        try:
            start = int(base64.urlsafe_b64decode(page.encode()).decode().removeprefix("pos:"))
        except ValueError:
            raise invalid("Invalid page: not a page token from a previous search", "page") from None
    found: list[dict[str, Any]] = []
    next_page = None
    for obj in table.newest_first(start):
        if all(_matches(obj, c) for c in clauses):
            if len(found) == limit:
                next_page = base64.urlsafe_b64encode(f"pos:{table.position[found[-1]['id']]}".encode()).decode()
                break
            found.append(obj)
    return found, next_page


def search_result(data: list[dict[str, Any]], next_page: str | None, url: str) -> dict[str, Any]:
    return {"object": "search_result", "data": data, "has_more": next_page is not None,
            "next_page": next_page, "url": url}
