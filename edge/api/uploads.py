"""How upload routes are documented: the multipart body and the refusals every upload shares."""

from __future__ import annotations

from typing import Any

from edge.api.schemas import Problem

UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "body, file count or pixel count over the limit "
          "(a decompression bomb is refused from its header, before decoding)"},
    415: {"model": Problem, "description": "not multipart, or a file that is not a supported "
          "image (judged from its bytes, not its declared type)"},
    429: {"model": Problem, "description": "recognition workers busy; see Retry-After"},
}


def multipart_body(field: str, description: str, many: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``field`` itself (see ``edge.api.multipart``)."""
    binary = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": binary, "minItems": 1} if many else binary
    return {"requestBody": {"required": True, "description": description, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": [field], "additionalProperties": False,
            "properties": {field: schema}}}}}}
