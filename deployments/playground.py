"""The playground page and the files it loads, from the package's ``static/`` folder.

The files a request may name are listed once, at import, from the folder itself: a request's name is looked up
in that list and never reaches the file system, so no path, however spelled, reads anything else.
"""

from __future__ import annotations

from importlib.resources import files

from deployments.errors import NotFound

STATIC = files("deployments").joinpath("static")
MEDIA_TYPES = {"js": "text/javascript", "css": "text/css", "png": "image/png", "svg": "image/svg+xml"}
STATIC_FILES = {
    item.name: MEDIA_TYPES[item.name.rpartition(".")[2]]
    for item in STATIC.iterdir()
    if item.is_file() and item.name.rpartition(".")[2] in MEDIA_TYPES
}


def page() -> str:
    """The playground's HTML."""
    return STATIC.joinpath("index.html").read_text(encoding="utf-8")


def static_file(name: str) -> tuple[bytes, str]:
    """(content, media type) of one of ``STATIC_FILES``; any other name is a 404 that quotes it only in part."""
    if name not in STATIC_FILES:
        raise NotFound(f"no static file {name[:100]!r}", code="not_found")
    return STATIC.joinpath(name).read_bytes(), STATIC_FILES[name]
