"""Open a report page in headless Chromium and read back what it drew: each image's decoded width
and each inline SVG chart's laid-out width, so a test sees the page as a reader's browser does."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
NO_BROWSER = "no chromium binary (Debian: apt-get install -y chromium)"
_PROBE = ("<script>window.addEventListener('load', () => {{ document.body.setAttribute('data-drawn', "
          "Array.from(document.querySelectorAll('{selector}')).map(e => Math.round({width})).join(',')); }});"
          "</script></body>")


def drawn_widths(page: Path, scratch: Path, selector: str = "img") -> list[int]:
    """Widths in pixels of the page's `selector` elements once loaded: an image's natural width, an
    SVG's on-screen width (0 for an image that did not decode or a chart that did not lay out)."""
    width = "e.naturalWidth" if selector == "img" else "e.getBoundingClientRect().width"
    probe = scratch / f"probe-{page.stem}.html"
    probe.write_text(page.read_text().replace("</body>", _PROBE.format(selector=selector, width=width)))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'data-drawn="([\d,]*)"', dom).group(1)
    return [int(w) for w in found.split(",")] if found else []
