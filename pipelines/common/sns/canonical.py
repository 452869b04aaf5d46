"""The SNS "string to sign": the canonical form both signing (devstack) and verifying use.

AWS signs "Key\nValue\n" pairs of a fixed set of keys in a fixed order; Subject is
included only when the envelope carries it.
"""

from collections.abc import Mapping

SIGNED_KEYS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}


class UnknownSnsType(ValueError):
    pass


def string_to_sign(envelope: Mapping[str, object]) -> bytes:
    msg_type = envelope.get("Type")
    keys = SIGNED_KEYS.get(msg_type) if isinstance(msg_type, str) else None
    if keys is None:
        raise UnknownSnsType(f"unknown SNS message Type {msg_type!r}")
    parts: list[str] = []
    for key in keys:
        if key == "Subject" and envelope.get("Subject") is None:
            continue
        value = envelope.get(key)
        if value is None:
            raise KeyError(f"SNS {msg_type} lacks signed field {key!r}")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")
