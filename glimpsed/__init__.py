"""glimpsed: a hot-folder daemon that turns photos of objects into 3D.

The daemon (this package) owns folders, jobs, scheduling and publishing; the
pipeline lives in :mod:`ai_modules`, which knows nothing of the daemon.
"""

__version__ = "0.1.0"
