"""``/ui``: the operator page, three static files from the package, no token needed to load.

Why the page itself is public: it holds nothing. It asks the operator for a token, keeps it in
the tab's ``sessionStorage`` and sends it as a bearer token to the same ``/v1`` routes any
client uses, so the page can do nothing a token could not do with curl. Why a fixed table of
files read at import: no path from the URL ever reaches the filesystem, and the device serves
the page with no CDN and no network (every asset ships in the wheel, ``edge/api/ui/``).

The Content-Security-Policy allows scripts, styles, images and requests from this origin only,
no inline script or style, no framing, no form posts elsewhere: a label crafted to contain
markup cannot run, and another site cannot frame the page to click on it.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # A new version of the package must reach the operator's browser at the next load.
    "Cache-Control": "no-cache",
}
#: URL name -> (file in edge/api/ui, media type).
ASSETS: dict[str, tuple[str, str]] = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "app.css": ("app.css", "text/css; charset=utf-8"),
}


def _load() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("edge.api").joinpath("ui")
    return {name: (folder.joinpath(file).read_bytes(), media)
            for name, (file, media) in ASSETS.items()}


_FILES = _load()


def _serve(name: str) -> Response:
    body, media = _FILES[name]
    return Response(body, media_type=media, headers=HEADERS)


@router.get("/ui")
@router.get("/ui/")
def page() -> Response:
    return _serve("")


@router.get("/ui/app.js")
def script() -> Response:
    return _serve("app.js")


@router.get("/ui/app.css")
def style() -> Response:
    return _serve("app.css")
