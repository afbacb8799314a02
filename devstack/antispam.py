"""`mxgate up`'s private spamd and rspamd: antispam on by default where they are installed.

When the operator has chosen no engines (``scanner.engines`` unset), :func:`begin` starts, in
a background thread so they come up while Kafka does, Debian's spamd (:class:`SpamdServer`)
and rspamd with its Redis (:class:`RspamdServer`), offline as the tests run them, each whose
binary is installed and whose address the operator has not set. :meth:`PrivateAntispam.wait`
then gives the scanner's settings: the default engines plus ``spamassassin`` and ``rspamd``
for those that started, with their addresses. A missing binary is one line and that engine
is simply not listed: antispam is not antivirus, so leaving it out fails nothing open.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from devstack.binaries import find
from devstack.rspamd import RspamdServer
from devstack.spamd import SpamdServer
from mxgate.settings import DEFAULT_ENGINES, Settings

__all__ = ["PrivateAntispam", "begin", "private_daemons"]

_SPAMD_ADDRESS = {"spamd_host", "spamd_port"}
_RSPAMD_ADDRESS = {"rspamd_url", "rspamd_controller_url"}


def _reachable_by_others(path: Path) -> bool:
    """Whether an unprivileged user ("nobody", whom spamd and rspamd's workers become when
    started as root) may walk down to ``path``: every existing ancestor searchable by others."""
    for p in [path, *path.parents]:
        if p.exists() and not p.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _state_dir(directory: Path) -> Path | None:
    """``directory`` when the daemons may use it, else None (a fresh temp dir each start):
    started as root they read and write as "nobody", who may be shut out of, e.g., /root."""
    if os.geteuid() != 0 or _reachable_by_others(directory):
        return directory
    return None


def _shared_cache() -> Path | None:
    """Where rspamd keeps its compiled regexps when its state lives in a fresh temp dir each
    start: one directory of the system temp dir that only root and "nobody" may enter (made
    so here; None when something else holds that name)."""
    path = Path(tempfile.gettempdir()) / "mxgate-rspamd-cache"
    nobody = pwd.getpwnam("nobody").pw_uid
    try:
        path.mkdir(mode=0o700)
        os.chown(path, nobody, -1)
    except FileExistsError:
        pass
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != nobody or st.st_mode & 0o777 != 0o700:
        return None
    return path


class PrivateAntispam:
    """The spamd and rspamd `up` started (either may be None) and what the scanner needs."""

    def __init__(self, workdir: Path, spamd: bool, rspamd: bool) -> None:
        """Start the wanted daemons in a thread; state under ``workdir``/spamd and /rspamd."""
        self.spamd: SpamdServer | None = None
        self.rspamd: RspamdServer | None = None
        self._workdir = workdir
        self._errors: list[str] = []
        # One thread each: both come up side by side, and beside Kafka.
        self._threads = [
            threading.Thread(target=start, name=f"antispam-{start.__name__}", daemon=True)
            for start, wanted in ((self._start_spamd, spamd), (self._start_rspamd, rspamd))
            if wanted
        ]
        for t in self._threads:
            t.start()

    def _start_spamd(self) -> None:
        server = SpamdServer(_state_dir(self._workdir / "spamd"))
        try:
            server.start()
        except (OSError, RuntimeError) as e:
            self._errors.append(f"spamd did not start, running without it: {e}")
            server.stop()
            return
        self.spamd = server

    def _start_rspamd(self) -> None:
        directory = _state_dir(self._workdir / "rspamd")
        cache = _shared_cache() if directory is None else None
        server = RspamdServer(min_learns=200, directory=directory, cache=cache)
        try:
            server.start()
        except (OSError, RuntimeError) as e:
            self._errors.append(f"rspamd did not start, running without it: {e}")
            return  # start() stopped what it had started
        self.rspamd = server

    def wait(self, say: Callable[[str], None]) -> tuple[dict[str, str], dict[str, str]]:
        """Once both are up (or failed: one line each to ``say``): the environment for every
        role and a second shell (engines, addresses), and the scanner's secret (rspamd's
        controller password, kept out of var/runtime.json)."""
        self._join()
        for line in self._errors:
            say(line)
        engines = list(DEFAULT_ENGINES)
        env: dict[str, str] = {}
        secret: dict[str, str] = {}
        if self.spamd is not None:
            engines.append("spamassassin")
            env["MXGATE_SCANNER__SPAM__SPAMD_HOST"] = "127.0.0.1"
            env["MXGATE_SCANNER__SPAM__SPAMD_PORT"] = str(self.spamd.port)
        if self.rspamd is not None:
            engines.append("rspamd")
            env["MXGATE_SCANNER__SPAM__RSPAMD_URL"] = self.rspamd.url
            env["MXGATE_SCANNER__SPAM__RSPAMD_CONTROLLER_URL"] = self.rspamd.controller_url
            secret["MXGATE_SCANNER__SPAM__RSPAMD_PASSWORD"] = self.rspamd.password
        if self.spamd is not None or self.rspamd is not None:
            env["MXGATE_SCANNER__ENGINES"] = json.dumps(engines)
            say(f"antispam: engines {', '.join(engines[len(DEFAULT_ENGINES) :])} added")
        return env, secret

    def _join(self) -> None:
        for t in self._threads:
            t.join()

    def stop(self) -> None:
        """Stop both (after a start still running, e.g. Ctrl-C while Kafka started)."""
        self._join()
        if self.spamd is not None:
            self.spamd.stop()
        if self.rspamd is not None:
            self.rspamd.stop()


def begin(
    workdir: Path,
    settings: Settings,
    say: Callable[[str], None],
    which: Callable[[str], str | None] = find,
) -> PrivateAntispam | None:
    """Start `up`'s spamd and rspamd in the background where wanted and installed; None when
    the operator chose the engines or configured both addresses, or neither is installed.

    A daemon not installed is one line to ``say``; its engine is then not listed.
    """
    if "engines" in settings.scanner.model_fields_set:
        return None  # the operator's list, as is
    configured = settings.scanner.spam.model_fields_set
    wanted: dict[str, bool] = {}
    for engine, tools, address in (
        ("spamassassin", ("spamd",), _SPAMD_ADDRESS),
        ("rspamd", ("rspamd", "redis-server"), _RSPAMD_ADDRESS),
    ):
        if configured & address:
            wanted[engine] = False  # the operator's own daemon: theirs to list in engines
            continue
        missing = [t for t in tools if which(t) is None]
        if missing:
            say(f"{' and '.join(missing)} not installed: running without the {engine} engine")
        wanted[engine] = not missing
    if not any(wanted.values()):
        return None
    return PrivateAntispam(workdir, wanted["spamassassin"], wanted["rspamd"])


@contextlib.contextmanager
def private_daemons(
    directory: Path | None = None,
) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """spamd and rspamd started exactly as `up` starts them (offline, Bayes untaught), for
    scoring a corpus (``bench/default_spam_model.py``); yields (environment, secret) as
    :meth:`PrivateAntispam.wait` gives them, and stops both at the end."""
    own = directory is None
    where = directory or Path(tempfile.mkdtemp(prefix="mxgate-antispam-"))
    if own:
        os.chmod(where, 0o755)  # spamd and rspamd's workers, as "nobody", walk into it
    daemons = PrivateAntispam(where, spamd=True, rspamd=True)
    try:
        env, secret = daemons.wait(lambda line: print(line, file=sys.stderr))
        if daemons.spamd is None or daemons.rspamd is None:
            raise RuntimeError("spamd and rspamd are both needed")
        yield env, secret
    finally:
        daemons.stop()
        if own:
            shutil.rmtree(where, ignore_errors=True)
