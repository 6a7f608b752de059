"""Uploaded images, parsed from a multipart body into memory and nowhere else.

Why not FastAPI's ``UploadFile``: Starlette spools any part over 1 MB into a temporary file, so
a visitor's photo sent to ``/v1/identify`` would touch the disk. Here the parts are collected in
memory, within the body limit that ``edge.api.limits`` enforces as bytes arrive, and dropped
when the request ends: an uploaded face is never written anywhere. Only the expected field is
accepted; any other field is a 422 naming it (strict, like the JSON bodies).
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from edge.api.errors import ApiError

#: Headers of one part: a client sending more (or bigger) ones is not uploading a photo.
MAX_PART_HEADERS = 8
MAX_FILENAME = 255


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


class _Collector:
    """python-multipart callbacks, gathering the parts of one field."""

    def __init__(self, field: str, max_files: int) -> None:
        self.field = field
        self.max_files = max_files
        self.uploads: list[Upload] = []
        self._headers: dict[bytes, bytes] = {}
        self._name = self._value = b""
        self._data = bytearray()
        self._filename = ""

    def on_part_begin(self) -> None:
        self._headers, self._data, self._name, self._value = {}, bytearray(), b"", b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in params:
            raise ApiError(422, "a multipart part has no form-data name")
        name = params[b"name"].decode("utf-8", "replace")
        if name != self.field:
            raise ApiError(422, f"unknown form field {name!r}; send the files as {self.field!r}")
        if len(self.uploads) >= self.max_files:
            files = "file" if self.max_files == 1 else "files"
            raise ApiError(413, f"at most {self.max_files} {files} per request")
        raw = params.get(b"filename", b"").decode("utf-8", "replace")
        # Only the base name, printable: it appears in answers and as a template's source.
        base = raw.replace("\\", "/").rsplit("/", 1)[-1]
        self._filename = "".join(ch for ch in base if ch.isprintable())[:MAX_FILENAME] or (
            f"upload-{len(self.uploads) + 1}")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]

    def on_part_end(self) -> None:
        self.uploads.append(Upload(self._filename, bytes(self._data)))
        self._data = bytearray()


async def read_files(request: Request, field: str, *, max_files: int) -> list[Upload]:
    """The files sent as ``field`` (at least one), or an ``ApiError`` saying what is wrong."""
    mime, params = parse_options_header(request.headers.get("content-type"))
    if mime != b"multipart/form-data":
        raise ApiError(415, f"send multipart/form-data with the file(s) in field {field!r}")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(422, "multipart/form-data without a usable boundary")
    collector = _Collector(field, max_files)
    callbacks = {name: getattr(collector, name) for name in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end",
        "on_headers_finished", "on_part_data", "on_part_end")}
    parser = MultipartParser(boundary, callbacks,  # type: ignore[arg-type]
                             max_header_count=MAX_PART_HEADERS)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(422, f"malformed multipart body: {exc}") from None
    if not collector.uploads:
        raise ApiError(422, f"no file in field {field!r}")
    return collector.uploads
