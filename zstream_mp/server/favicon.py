"""The page's icon, kept in code so every install has it (the wheel ships static text files).

Three bars of a live stream in the page's accent colour; an SVG, so one file serves every
size, at `/favicon.svg` and at `/favicon.ico` (where browsers ask without a link).
"""

from __future__ import annotations

FAVICON_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="7" fill="#1d2330"/>'
    b'<rect x="6" y="17" width="5" height="9" rx="1.5" fill="#7aa2ff"/>'
    b'<rect x="13.5" y="11" width="5" height="15" rx="1.5" fill="#3a6df0"/>'
    b'<rect x="21" y="6" width="5" height="20" rx="1.5" fill="#1f9d55"/>'
    b"</svg>"
)
