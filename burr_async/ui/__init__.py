"""A read-only web UI over the applications a persister stored: ``burr-async ui`` serves it,
and :func:`create_app` makes it an ASGI app to serve or mount in an application.

Needs the ``ui`` extra (``pip install 'burr_async[ui]'``: Starlette, Jinja2, uvicorn). The
pages ship in the package with every asset they load (no CDN, no network at run time) and
read the persister only (``load``, ``history``, ``list_apps``); see ``docs/observability.md``.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    from burr_async.errors import ConfigurationError

    raise ConfigurationError(
        f"burr_async.ui needs the 'ui' extra ({exc.name} is not installed): "
        "pip install 'burr_async[ui]'"
    ) from exc

from burr_async.ui._app import create_app

__all__ = ["create_app"]
