"""The operator console: one web UI of the live platform (swarms, tasks, chassis, cost, audit, mesh, nodes).

Pages are rendered on the server (Jinja2, every value escaped) and kept live by server-sent events fed
from the witness log, the one record every component writes. Operator actions (reset a breaker, set a
budget, deregister a service, retry a failed payout) need an operator credential and a CSRF token, and
are audited under the operator's name; a viewer credential sees everything but secrets and changes nothing.
"""

from infrafabric.console.app import create_console_app
from infrafabric.console.platform import Platform

__all__ = ["Platform", "create_console_app"]
