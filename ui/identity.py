"""Who is at this browser: one student per browser, known by a secret only that browser holds.

A class breaks an identity kept per tab (a second tab is a stranger, a sweep link reopened hands out a new cell) and an
identity kept in the URL (the teacher's id is on the projector; anyone who reads it controls the teacher's runs). So:

- The browser keeps a random secret in a cookie the app sets (`vqdemo_student`, one year, this site only). Every tab
  and every visit sends it, so every tab is the same student. A browser without one gets a fresh secret on its first
  page, and the cookie is written by a tiny component (Streamlit has no API to set cookies from the server).
- What pages show and run folders store is the secret's hash (`Student.id`). It names runs; it grants nothing. Only a
  session that holds the secret acts as that student, so an id read off a screen or a link controls nothing.
- `?me=<secret>` moves a student to another browser (a link they share with themself, from the sidebar): the browser
  that opens it adopts the secret, and the parameter leaves the address bar at once.
- The teacher is whoever proves the server's teacher key once (`?teacher=KEY`, or typed in the sidebar); the browser
  then keeps a proof bound to its own student id (an HMAC of the id under the key), so reloads and new tabs stay the
  teacher, and changing the key ends every old proof. The key comes from `VQDEMO_TEACHER_KEY`, else one is made on the
  first start and kept in `<runs>/teacher-key` (printed in the server's console).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ui import state, text, theme
from vqdemo import files

COOKIE = "vqdemo_student"
TEACHER_COOKIE = "vqdemo_teacher"
KEY_PARAM = "me"            # ?me=<secret>: adopt this secret (a student's own link to their runs)
TEACHER_PARAM = "teacher"   # ?teacher=<key>: become the teacher
TEACHER_ENV = "VQDEMO_TEACHER_KEY"
KEY_FILE = "teacher-key"
MIN_KEY_CHARS = 8
MAX_TRIES = 5               # wrong teacher keys a session may try ...
LOCKOUT_S = 60.0            # ... before it must wait this long
_SECRET = re.compile(r"[0-9a-f]{32}")
_STATE = "_identity"


@dataclass(frozen=True)
class Student:
    """This session's student. `id` is public (shown, stored in run folders); `secret` never leaves this browser."""

    id: str
    secret: str
    teacher: bool
    address: str | None   # the connection's address: the per-address job limit counts by it
    confirmed: bool = True   # the browser is known to hold this secret (False for a moment on a first visit)


def public_id(secret: str) -> str:
    """The name a secret is known by: 12 hex characters of its hash. Seeing it is no way to the secret."""
    return hashlib.sha256(f"vqdemo-student:{secret}".encode()).hexdigest()[:12]


def valid_secret(value: object) -> bool:
    return isinstance(value, str) and _SECRET.fullmatch(value) is not None


def new_secret() -> str:
    return os.urandom(16).hex()


def teacher_proof(key: str, student_id: str) -> str:
    """What the teacher's browser keeps: bound to its student id, useless to any other browser, void when the key
    changes."""
    return hmac.new(key.encode(), f"vqdemo-teacher:{student_id}".encode(), hashlib.sha256).hexdigest()[:32]


def is_teacher(key: str | None, student_id: str, proof: object) -> bool:
    return bool(key) and isinstance(proof, str) and hmac.compare_digest(proof, teacher_proof(key, student_id))


def key_matches(key: str | None, given: object) -> bool:
    return bool(key) and isinstance(given, str) and hmac.compare_digest(given.strip().encode(), key.encode())


@st.cache_resource(show_spinner=False)
def _teacher_key(runs_dir: str) -> str:
    """The server's teacher key: $VQDEMO_TEACHER_KEY, else one kept in the runs folder (made on the first start)."""
    given = os.environ.get(TEACHER_ENV, "").strip()
    if len(given) >= MIN_KEY_CHARS:
        return given
    path = Path(runs_dir) / KEY_FILE
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = ""
    if len(kept) < MIN_KEY_CHARS:
        kept = os.urandom(12).hex()
        try:
            files.atomic_write_bytes(path, kept.encode())
            path.chmod(0o600)
        except OSError:
            pass   # a read-only runs folder: the key lasts until the server stops
    too_short = f" ({TEACHER_ENV} is shorter than {MIN_KEY_CHARS} characters, so it is not used)" if given else ""
    print(f"vqdemo: the teacher key is {kept}{too_short}; open the app with ?{TEACHER_PARAM}={kept} once, "
          f"or type it under 'Teacher' in the sidebar. It is kept in {path}.", file=sys.stderr, flush=True)
    return kept


def teacher_key() -> str:
    return _teacher_key(str(state.runs_dir().resolve()))


def _cookies() -> dict[str, str]:
    try:
        return {k: v for k, v in st.context.cookies.to_dict().items() if isinstance(v, str)}
    except Exception:  # noqa: BLE001 - no request context (a test harness): no cookies
        return {}


LOCAL = "this machine"   # Streamlit names no address for a connection from the server's own machine


def _address() -> str | None:
    """The connection's network address; connections from this machine share one name (a script run on the server
    is one address too); None without a connection (a test harness)."""
    try:
        if not st.context.headers:
            return None
        return st.context.ip_address or LOCAL
    except Exception:  # noqa: BLE001 - no request context
        return None


def current() -> Student:
    """This session's student, resolved once per script run: a secret from ?me= (taken out of the URL), else the one
    this session holds (or a cookie the component reported), else the browser's cookie, else a new one."""
    s = st.session_state.setdefault(_STATE, {})
    cookies = _cookies()
    linked = state.take_from_url(KEY_PARAM)   # a secret never stays in the address bar (nor on a projector)
    if valid_secret(linked) and linked != s.get("secret"):
        s.update(secret=linked, adopt=True, proof=None)
    reported = (st.session_state.get("vqdemo_identity") or {}).get("cookie")
    if not s.get("adopt") and valid_secret(reported) and reported != s.get("seen"):
        s["seen"] = reported
        if reported != s.get("secret"):   # another tab set the cookie first: be that student
            s.update(secret=reported, proof=None)
    if not valid_secret(s.get("secret")):
        s["secret"] = cookies[COOKIE] if valid_secret(cookies.get(COOKIE)) else new_secret()
    me = public_id(s["secret"])
    if s.get("proof") is None and not s.get("adopt"):
        s["proof"] = cookies.get(TEACHER_COOKIE, "")
    key = teacher_key()
    typed = state.take_from_url(TEACHER_PARAM)
    if typed is not None:
        prove(typed)
    # Confirmed: the browser sent this secret, or its component has reported what the browser holds (the secret, or
    # nothing where cookies are blocked). Until then a first visit's other tabs could still be other students.
    s["known"] = cookies.get(COOKIE) == s["secret"] and not s.get("adopt")
    confirmed = s["known"] or reported is not None
    return Student(me, s["secret"], is_teacher(key, me, s.get("proof")), _address(), confirmed)


def prove(given: str) -> str | None:
    """Try a teacher key for this browser; returns why it was refused (None when accepted)."""
    s = st.session_state.setdefault(_STATE, {})
    now = time.monotonic()
    if s.get("locked_until", 0.0) > now:
        s["refused"] = f"Too many wrong teacher keys: try again in {s['locked_until'] - now:.0f} s."
        return s["refused"]
    if not key_matches(teacher_key(), given):
        s["tries"] = s.get("tries", 0) + 1
        if s["tries"] >= MAX_TRIES:
            s.update(tries=0, locked_until=now + LOCKOUT_S)
        s["refused"] = ("That is not this server's teacher key; it is in the server's console and in "
                        f"<runs>/{KEY_FILE}.")
        return s["refused"]
    s.update(tries=0, refused=None, proof=teacher_proof(teacher_key(), public_id(s["secret"])))
    return None


def leave_teacher() -> None:
    st.session_state.setdefault(_STATE, {})["proof"] = ""


def refused() -> str | None:
    """The last wrong teacher key's message, once."""
    s = st.session_state.setdefault(_STATE, {})
    msg, s["refused"] = s.get("refused"), None
    return msg


_component = st.components.v2.component("vqdemo_identity", html="<span hidden></span>", js="""
const read = (name) => {
  const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
};
const write = (name, value) => {
  const secure = location.protocol === "https:" ? "; Secure" : "";
  const age = value ? 31536000 : 0;
  document.cookie = `${name}=${encodeURIComponent(value)}; path=/; max-age=${age}; SameSite=Strict${secure}`;
};
let reported = null;
export default function ({ data, setStateValue }) {
  if (!data) return;
  const held = read(data.name);
  if (!data.adopt && /^[0-9a-f]{32}$/.test(held) && held !== data.secret) {
    reported = held;
    setStateValue("cookie", held);   // another tab wrote it first: this session becomes that student
    return;
  }
  if (held !== data.secret) write(data.name, data.secret);
  if (read(data.teacherName) !== data.proof) write(data.teacherName, data.proof);
  const now = read(data.name);   // what the browser holds now: the secret, or "" where cookies are blocked
  if (!data.known && now !== reported) {
    reported = now;
    setStateValue("cookie", now);   // the server may now act for this student (a sweep cell, a run)
  }
}
""")


def _noop() -> None:
    pass


def keep(student: Student) -> None:
    """Write this browser's cookies (the student's secret, the teacher's proof) when they differ from what it holds.
    Drawn on every run at one place (app.py), so the page's layout never shifts; it shows nothing."""
    s = st.session_state.setdefault(_STATE, {})
    _component(key="vqdemo_identity", on_cookie_change=_noop,
               data={"name": COOKIE, "teacherName": TEACHER_COOKIE, "secret": student.secret,
                     "proof": s.get("proof") or "", "adopt": bool(s.get("adopt")), "known": bool(s.get("known"))})
    if s.get("adopt"):
        s["adopt"] = False   # adopted once: later runs behave like any other


def sidebar(student: Student) -> None:
    """The teacher's sign-in (a key, once per browser) and a student's link to their runs for another browser."""
    if student.teacher:
        st.caption("You are the teacher: your runs have their own workers and never wait behind the class.")
        st.button("Leave teacher mode", key="id_leave_teacher", on_click=leave_teacher, type="tertiary")
    else:
        with st.expander("Teacher"), st.form("id_teacher_form", border=False):
            st.text_input("Teacher key", type="password", key="id_teacher_key",
                          help="The key the server printed when it started (also in its runs folder, teacher-key).")
            if st.form_submit_button("Become the teacher"):
                prove(st.session_state.get("id_teacher_key", ""))
        if msg := refused():
            st.error(text.md(msg))
    if not theme.presenter():   # a secret never goes on a projector
        with st.expander("Your runs in another browser"):
            st.code(state.link({KEY_PARAM: student.secret}), language=None, wrap_lines=True)
            st.caption(f"You are student {student.id} here. Open this link in another browser to be the same "
                       "student there. Keep it to yourself: whoever opens it controls your runs.")
