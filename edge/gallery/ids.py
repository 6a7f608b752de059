"""Random, pseudonymous identifiers.

Why random and not derived: an id computed from a name, a face or a time could be recomputed
by whoever holds those, linking an MQTT event back to a person. 128 random bits in base32 give
nothing to recompute and no collisions in practice.
"""

from __future__ import annotations

import base64
import re
import secrets

PERSON = "p"
TEMPLATE = "t"
CONSENT = "c"
BUNDLE = "b"

_ID_RE = re.compile(r"^[ptcb]_[a-z2-7]{26}$")


def new_id(kind: str) -> str:
    raw = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return f"{kind}_{raw}"


def is_id(value: object, kind: str) -> bool:
    return isinstance(value, str) and bool(_ID_RE.match(value)) and value[0] == kind
