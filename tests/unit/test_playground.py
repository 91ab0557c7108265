"""deployments/playground.py: the page and its files, served from the one list of the static folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.errors import NotFound
from deployments.playground import STATIC_FILES, page, static_file

FOLDER = Path(__file__).resolve().parents[2] / "deployments" / "static"


def test_the_page_and_every_script_and_style_of_the_folder_are_served() -> None:
    html = page()
    assert 'href="static/playground.css"' in html and 'src="static/playground.js"' in html
    scripts_and_styles = [path for path in FOLDER.iterdir() if path.suffix in (".js", ".css")]
    assert len(scripts_and_styles) >= 2
    for path in scripts_and_styles:
        content, media_type = static_file(path.name)
        assert content == path.read_bytes()
        assert media_type == {".js": "text/javascript", ".css": "text/css"}[path.suffix]
    assert "index.html" not in STATIC_FILES  # the page has its own route


@pytest.mark.parametrize(
    "name", ["index.html", "../ingress.py", "..%2fconfig.py", "/etc/passwd", "api.js/", "API.JS", "a" * 300 + ".js"]
)
def test_any_other_name_is_a_404_that_quotes_it_in_part(name: str) -> None:
    with pytest.raises(NotFound) as err:
        static_file(name)
    assert err.value.code == "not_found" and len(err.value.message) < 200
