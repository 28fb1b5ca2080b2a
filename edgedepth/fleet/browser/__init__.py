"""The fleet data browser: read-only web pages over the ingest store, the rounds and the registry.

`edgedepth dashboard` serves it alone; `edgedepth ingest serve --admin-token-file F` mounts it at /browse.
Starlette and Jinja2 (the `server` extra) are imported only when an app is made.
"""

from edgedepth.fleet.browser.app import BrowserConfig, create_browser_app, create_dashboard_app

__all__ = ["BrowserConfig", "create_browser_app", "create_dashboard_app"]
