"""CSS selection over HTML with selectolax (the Lexbor HTML5 parser): the scraper's extraction rule."""

from __future__ import annotations

from selectolax.lexbor import LexborHTMLParser, SelectolaxError

_PROBE = LexborHTMLParser("<p></p>")


def selector_error(selector: str) -> str | None:
    """Why ``selector`` is not a CSS selector Lexbor can run, or None; checked before any run starts."""
    if not selector.strip():
        return "must be a CSS selector, e.g. 'h1' or 'a.title'"
    try:
        _PROBE.css(selector)
    except SelectolaxError:
        return "is not a valid CSS selector"
    return None


def _document(html: bytes | str, charset: str | None) -> LexborHTMLParser:
    """Parse ``html``. The charset of the HTTP response wins, as in browsers; without one the parser
    detects it from the bytes (byte-order mark, ``<meta charset>``), falling back to UTF-8."""
    if isinstance(html, bytes) and charset:
        try:
            return LexborHTMLParser(html.decode(charset, errors="replace"))
        except LookupError:  # a charset name Python does not know: let the parser detect one
            pass
    return LexborHTMLParser(html, encoding=True) if isinstance(html, bytes) else LexborHTMLParser(html)


def select(
    html: bytes | str,
    selector: str,
    attribute: str | None = None,
    limit: int = 100,
    charset: str | None = None,
) -> list[str]:
    """What ``selector`` matches in ``html``, in document order: each element's text (whitespace
    collapsed), or its ``attribute`` when given (elements without it are skipped); at most ``limit``.
    ``charset`` is the one the HTTP response declared, if any.
    """
    values: list[str] = []
    for node in _document(html, charset).css(selector):
        if attribute is None:
            value: str | None = " ".join(node.text(separator=" ", strip=True).split())
        else:
            value = node.attributes.get(attribute)
        if value is not None:
            values.append(value)
            if len(values) >= limit:
                break
    return values
