"""Who is looking at the console: sessions opened with an operator or viewer credential, and the CSRF token
each session's forms carry.

The credential is verified once at login (signature, expiry, revocation) and never stored in the page or
the cookie; the cookie holds only a random session id (HttpOnly, SameSite=Strict). A session ends when
its credential would have expired, at logout, or after ``idle`` seconds without a request.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from infrafabric.coordinator.credentials import Identity
from infrafabric.errors import CredentialError, PermissionDeniedError

COOKIE = "ifconsole_session"
CONSOLE_ROLES = ("operator", "viewer")
MAX_SESSIONS = 10_000


class CSRFError(PermissionDeniedError):
    """A state-changing request without this session's CSRF token (or from another origin)."""

    error_code = "IF_ERR_CSRF"


@dataclass
class ConsoleSession:
    session_id: str
    identity: Identity
    csrf: str
    expires_at: float  # wall clock seconds
    last_seen: float = field(default_factory=time.monotonic)
    flash: str = ""

    @property
    def can_act(self) -> bool:
        return self.identity.role == "operator"

    def require_operator(self, action: str) -> Identity:
        if not self.can_act:
            raise PermissionDeniedError(f"{action} needs the operator role; {self.identity.name} is a viewer")
        return self.identity

    def check_csrf(self, token: object) -> None:
        if not isinstance(token, str) or not secrets.compare_digest(token.encode(), self.csrf.encode()):
            raise CSRFError("this form's CSRF token is missing or wrong: reload the page and try again")


class SessionStore:
    """Sessions in this console process (a restart logs everyone out, as it should for a console)."""

    def __init__(self, *, idle: float = 3600.0, max_sessions: int = MAX_SESSIONS) -> None:
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()
        self._idle = idle
        self._max = max_sessions

    def open(self, identity: Identity) -> ConsoleSession:
        if identity.role not in CONSOLE_ROLES:
            raise PermissionDeniedError(f"a {identity.role} credential cannot open the console; "
                                        "use an operator or viewer credential")
        session = ConsoleSession(secrets.token_urlsafe(32), identity, secrets.token_urlsafe(32),
                                 float(identity.expires_at))
        self._sessions[session.session_id] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> ConsoleSession:
        session = self._sessions.get(session_id or "")
        if session is None:
            raise CredentialError("log in with an operator or viewer credential")
        now = time.monotonic()
        if time.time() >= session.expires_at or now - session.last_seen > self._idle:
            self._sessions.pop(session.session_id, None)
            raise CredentialError("your console session has ended: log in again")
        session.last_seen = now
        self._sessions.move_to_end(session.session_id)
        return session

    def close(self, session_id: str | None) -> None:
        self._sessions.pop(session_id or "", None)

    def __len__(self) -> int:
        return len(self._sessions)
