"""mkdocs hooks: Sphinx cross-reference roles in docstrings become links in the API reference.

The docstrings use Sphinx fields and roles (``:class:`Runtime```), which mkdocstrings renders
as the role's name before the code. This turns each into a link to the named object through
mkdocs-autorefs (optional: a name outside the reference stays plain code, without a warning).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|attr|exc|data|mod|obj):<code>~?([\w.]+)(\(\))?</code>")


def _link(match: re.Match[str]) -> str:
    name = match.group(1)
    shown = name.rsplit(".", 1)[-1] if "." in name and name.startswith("actorsource.") else name
    identifier = name if name.startswith("actorsource.") else f"actorsource.{name}"
    return (
        f'<autoref identifier="{identifier}" optional><code>{shown}'
        f"{match.group(2) or ''}</code></autoref>"
    )


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(_link, html)
