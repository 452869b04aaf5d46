"""The local Stripe's form decoding: Stripe's nested keys, lists and expand[]."""

from __future__ import annotations

import pytest

from devstack.local_stripe.errors import StripeError
from devstack.local_stripe.wire import as_bool, as_int, as_metadata, parse_form


def test_form_decoding_of_nested_keys_lists_and_expand():
    assert parse_form("metadata[org]=o1&metadata[k]=&items[0][price]=p1&items[0][quantity]=2&items[1][price]=p2"
                      "&expand[]=a&expand[]=b&expand2[0]=c") == {
        "metadata": {"org": "o1", "k": ""}, "items": [{"price": "p1", "quantity": "2"}, {"price": "p2"}],
        "expand": ["a", "b"], "expand2": ["c"]}
    assert parse_form("a[b][c]=1&a[b][d]=2") == {"a": {"b": {"c": "1", "d": "2"}}}
    with pytest.raises(StripeError, match="Conflicting"):
        parse_form("a=1&a[b]=2")


def test_coercion_names_the_parameter():
    assert as_int({"limit": "7"}, "limit") == 7
    with pytest.raises(StripeError) as err:
        as_int({"limit": "seven"}, "limit")
    assert (err.value.status, err.value.param, err.value.code) == (400, "limit", "parameter_invalid_integer")
    assert as_bool({"confirm": "true"}, "confirm") is True and as_bool({}, "confirm", False) is False
    with pytest.raises(StripeError):
        as_bool({"confirm": "yes please"}, "confirm")


def test_metadata_merges_and_an_empty_value_removes_a_key():
    assert as_metadata({"metadata": {"b": "2", "a": ""}}, {"a": "1", "c": "3"}) == {"b": "2", "c": "3"}
    assert as_metadata({"metadata": ""}, {"a": "1"}) == {}
    with pytest.raises(StripeError):
        as_metadata({"metadata": {"n": {"x": "1"}}})
