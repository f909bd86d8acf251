"""The daemon's web page, JSON API and Prometheus metrics (`web.*` in the config; README "Web page").

`WebServer` runs the Starlette application (`app.create_app`) on uvicorn in a thread of the daemon.
"""

from glimpsed.web.server import WebServer

__all__ = ["WebServer"]
