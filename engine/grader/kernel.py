"""One learner notebook's kernel, driven from the grader: cells and calls under deadlines, killed and restarted.

The kernel is its own process group started by ``launch`` (memory and file-size caps, an
unprivileged user when we are root), in the notebook's private folder, with a scrubbed
environment. Every cell and every call has a wall-clock deadline kept here, outside the kernel:
past it, the whole process group is killed (an interrupt can be ignored, an alarm replaced).
After a kill or a crash a fresh kernel replays the cells that had finished (not the one that
hung or crashed), so one bad cell or call costs only its own task. Output is capped.
"""
from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import codec
from .remote import CallTimedOut, KernelDied, Unavailable, remote_exception

_PASS_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")
_PASS_PREFIX = ("OPENBLAS_", "OMP_", "MKL_", "ENGINE_")
_USER_OK: dict = {}
_WARM_UP = ("print('x')\n(1, 2.5, 'x', [None], {1: b''}, __import__('numpy').ones((2, 2)))",
            "def _engine_grader_warm_up():\n    return 1 / 0\n_engine_grader_warm_up()",
            "del _engine_grader_warm_up")


def unprivileged_user() -> tuple[str | None, str]:
    """(user to run learner code as, or None; why) — a user only when we are root and it can run the kernel."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, "the grader is not running as root, so learner code runs as the same user"
    if "user" not in _USER_OK:
        import pwd
        name = os.environ.get("ENGINE_GRADER_USER", "nobody")
        try:
            pwd.getpwnam(name)
        except KeyError:
            _USER_OK["user"] = (None, f"there is no user {name!r} to run learner code as: it runs as root")
            return _USER_OK["user"]
        r = subprocess.run([sys.executable, "-m", "engine.grader.launch", "--user", name, "--check"], cwd="/",
                           env=_env(Path("/")), capture_output=True, text=True, timeout=120)
        if r.returncode == 0:
            _USER_OK["user"] = (name, f"learner code runs as the unprivileged user {name!r}")
        else:
            why = (r.stdout.strip().splitlines() or r.stderr.strip().splitlines() or ["cannot run the kernel"])[-1]
            _USER_OK["user"] = (None, f"learner code runs as root: as user {name!r} it {why.strip()[:200]}")
    return _USER_OK["user"]


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k in _PASS_ENV or k.startswith(_PASS_PREFIX)}
    env.update(HOME=str(home), TMPDIR=str(home), IPYTHONDIR=str(home / ".ipython"), MPLCONFIGDIR=str(home / ".mpl"),
               PYDEVD_DISABLE_FILE_VALIDATION="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _kill_group(gid: int, rounds: int = 20) -> None:
    """SIGKILL every process whose group is ``gid``: also those a kernel started in a session of their own.

    Only that kernel's processes have this group (``launch.private_gid``), and they cannot leave it.
    """
    for _ in range(rounds):  # again while some were found: one may have forked meanwhile
        found = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            lines = status.splitlines()
            gids = next((ln.split()[1:] for ln in lines if ln.startswith("Gid:")), [])
            if str(gid) in gids and "State:\tZ" not in status:  # (a zombie is dead already)
                found += 1
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return
        time.sleep(0.05)


def read_private(path: Path, limit: int) -> bytes:
    """A regular file's bytes (no symlink followed, at most ``limit``) or ValueError."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        import stat
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise ValueError("not a regular file of a bounded size")
        return f.read(limit + 1)


class KernelSession:
    """Cells run with ``run_cell``; learner functions with ``call``; ``close`` kills what is left."""

    def __init__(self, folder: Path, memory_mb: int = 4096, output_mb: float = 2, user: str | None = None,
                 max_restarts: int = 12, start_timeout: float = 120, conn_dir: Path | None = None):
        self.folder, self.memory_mb, self.user = Path(folder), memory_mb, user
        self.conn_dir = Path(conn_dir or folder)  # the kernel's command line names this folder, not ``folder``
        self.output_limit = int(output_mb * 2 ** 20)
        self.max_restarts, self.start_timeout = max_restarts, start_timeout
        self.history: list = []  # (cell key, code, timeout) of the cells that finished, replayed after a restart
        self.restarts, self.proc, self.kc, self.broken, self.gid = 0, None, None, None, None
        self._n = 0
        import zmq
        self.ctx = zmq.Context()
        self.ctx.setsockopt(zmq.MAXMSGSIZE, 64 * 2 ** 20)  # a bigger message from the kernel drops the link

    # -------------------------------------------------------------- process
    def start(self) -> None:
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        conn = self.conn_dir / f"kernel-{secrets.token_hex(4)}.json"
        write_connection_file(str(conn), ip="127.0.0.1", key=secrets.token_hex(32).encode())
        cmd = [sys.executable, "-m", "engine.grader.launch", "--memory-mb", str(self.memory_mb), str(conn)]
        if self.user:
            cmd[3:3] = ["--user", self.user]
        self.proc = subprocess.Popen(cmd, cwd=self.folder, env=_env(self.folder), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        kc = BlockingKernelClient(context=self.ctx)
        kc.load_connection_file(str(conn))
        kc.start_channels()
        self.kc = kc
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                self.kill()
                raise Unavailable(f"the kernel would not start (exit status {self.proc.returncode})")
            try:
                kc.wait_for_ready(timeout=min(5.0, max(0.1, deadline - time.monotonic())))
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise Unavailable(f"the kernel did not start within {self.start_timeout:g} s") from None
        if self.user:  # as root, once: what IPython loads the first time it shows an error and a value
            for code in _WARM_UP:
                self._execute(code, self.start_timeout, keep=False)
        code = "import engine.grader.agent as _g\n_g.install()\ndel _g"
        if self.user:  # before any learner code: the kernel becomes the user for good, with ids of its own
            from .launch import private_id
            self.gid = private_id()  # its user id too: no other kernel can signal or trace this one
            code += (f"\n__import__('engine.grader.launch', fromlist=['_']).drop_privileges({self.user!r}, "
                     f"{str(self.folder)!r}, {self.gid}, {self.gid})")
        r = self._execute(code, self.start_timeout, keep=False)
        if r["status"] != "ok":
            self.kill()
            raise Unavailable(f"the grader's helper did not load in the kernel ({r['status']}: {r.get('error')})")
        if self.user and not self._dropped():
            self.kill()
            raise Unavailable(f"the kernel did not become user {self.user!r}")

    def _dropped(self) -> bool:
        """Whether every thread of the kernel runs as ``self.user`` (read here, from /proc)."""
        import pwd
        pw = pwd.getpwnam(self.user)
        try:
            tasks = os.listdir(f"/proc/{self.proc.pid}/task")
            uids = None
            for t in tasks:
                lines = Path(f"/proc/{self.proc.pid}/task/{t}/status").read_text().splitlines()
                ids = {ln.split(":")[0]: ln.split()[1:] for ln in lines if ln.startswith(("Uid:", "Gid:", "Groups:"))}
                gids = ids.get("Gid") or ["0"]
                uids = uids or ids.get("Uid") or ["0"]  # its own id, or the user's where that could not be taken
                if uids[0] not in (str(self.gid), str(pw.pw_uid)) or ids.get("Uid") != uids[:1] * 4 or \
                        gids != gids[:1] * 4 or "0" in gids or \
                        ids.get("Groups", ["0"]) not in ([], gids[:1]):
                    return False
        except OSError:
            return False
        return bool(tasks)

    def kill(self) -> None:
        if self.kc is not None:
            try:
                self.kc.stop_channels()
            except Exception:
                pass
            self.kc = None
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the kernel and anything it started
            except (ProcessLookupError, PermissionError):
                pass
            if self.gid is not None:
                _kill_group(self.gid)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if self.gid is not None:
            from .launch import release_id
            release_id(self.gid)  # every process that had it is gone: another kernel may take it
            self.gid = None

    def close(self) -> None:
        self.kill()
        self.ctx.destroy(linger=0)

    def restart(self) -> None:
        """A fresh kernel with the finished cells replayed; a replayed cell that now fails is dropped."""
        while True:
            self.kill()
            self.restarts += 1
            if self.restarts > self.max_restarts:
                self.broken = f"the kernel was restarted {self.max_restarts} times; grading stopped there"
                raise Unavailable(self.broken)
            self.start()
            for item in list(self.history):
                r = self._execute(item[1], item[2], keep=False)
                if r["status"] in ("timeout", "died", "flood"):
                    self.history.remove(item)
                    break
            else:
                return

    # -------------------------------------------------------------- running code
    def _execute(self, code: str, timeout: float, keep: bool = True) -> dict:
        """Run ``code``; {"status": ok|error|timeout|died|flood, "outputs": [...], "error": (ename, evalue)}."""
        kc, out, size = self.kc, {"status": "ok", "outputs": [], "error": None}, 0
        msg_id = kc.execute(code, silent=False, store_history=False, allow_stdin=False, stop_on_error=False)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                out["status"] = "timeout"
                return out
            try:
                msg = kc.get_iopub_msg(timeout=min(0.25, left))
            except queue.Empty:
                if self.proc.poll() is not None:
                    out["status"] = "died"
                    return out
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                return out
            if kind == "error":
                out["status"] = "error"
                out["error"] = (str(content.get("ename", ""))[:200], str(content.get("evalue", ""))[:2000])
                if keep:
                    out["outputs"].append({"output_type": "error", "ename": out["error"][0],
                                           "evalue": out["error"][1], "traceback": []})
                continue
            if kind not in ("stream", "display_data", "execute_result"):
                continue
            size += len(str(content.get("text", ""))) + sum(len(str(v)) for v in content.get("data", {}).values())
            if size > self.output_limit:
                out["status"] = "flood"
                return out
            if keep and kind == "stream":
                out["outputs"].append({"output_type": "stream", "name": content.get("name", "stdout"),
                                       "text": str(content.get("text", ""))})
            elif keep:
                data = {k: v for k, v in content.get("data", {}).items() if k in ("text/plain", "text/html", "text/markdown")}
                o = {"output_type": kind, "data": data, "metadata": {}}
                if kind == "execute_result":
                    o["execution_count"] = content.get("execution_count")
                out["outputs"].append(o)

    def run_cell(self, key, code: str, timeout: float) -> dict:
        """Run one notebook cell; after a hang, a crash or a flood the kernel is replaced and the cell is not replayed."""
        if self.broken:
            return {"status": "skipped", "outputs": [], "error": None}
        r = self._execute(code, timeout)
        if r["status"] in ("timeout", "died", "flood"):
            try:
                self.restart()
            except Unavailable:
                pass
        else:
            self.history.append((key, code, timeout))
        return r

    def _fresh(self, stem: str) -> Path:
        self._n += 1
        return self.folder / f"{stem}-{self._n}-{secrets.token_hex(6)}"

    def _roundtrip(self, snippet: str, payload, timeout: float):
        """Write ``payload``, run ``snippet`` (formatted with the in/out paths), read the answer back."""
        if self.broken:
            raise Unavailable(self.broken)
        inp, outp = self._fresh("in"), self._fresh("out")
        data, counting = codec.encode(payload)
        fd = os.open(inp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            r = self._execute(snippet.format(inp=str(inp), outp=str(outp)), timeout, keep=False)
        except BaseException:  # our own part deadline while the kernel works: it must not keep running
            self.restart()
            raise
        finally:
            os.unlink(inp) if inp.exists() else None
        if r["status"] in ("timeout", "died", "flood"):
            why = {"timeout": None, "died": "the kernel process ended", "flood": "it printed too much"}[r["status"]]
            self.restart()
            raise CallTimedOut() if why is None else KernelDied(why)
        try:
            raw = read_private(outp, codec.MAX_BYTES)
            os.unlink(outp)
        except (OSError, ValueError):
            err = r.get("error") or ("", "no result")
            raise remote_exception("RuntimeError", f"the grader's helper in the kernel failed ({err[0]}: {err[1][:300]})")
        try:
            answer = codec.decode(raw)
        except codec.CodecError as e:
            raise remote_exception("ValueError", f"its result could not be read as data ({e})") from None
        if not isinstance(answer, dict):
            raise remote_exception("RuntimeError", "the kernel answered with something the grader does not know")
        for rec, got in zip(counting, answer.pop("records", None) or []):
            if isinstance(got, list):
                rec.extend(int(n) for n in got[:100_000] if isinstance(n, int))
        return answer

    def call(self, name: str, task: str, args, kwargs, timeout: float) -> dict:
        snippet = ("__import__('engine.grader.agent', fromlist=['run_call']).run_call(globals(), "
                   f"{name!r}, {task!r}, {{inp!r}}, {{outp!r}})")
        return self._roundtrip(snippet, (list(args), dict(kwargs)), timeout)

    def manifest(self, names, timeout: float = 60) -> dict:
        snippet = f"__import__('engine.grader.agent', fromlist=['manifest']).manifest(globals(), {list(names)!r}, {{outp!r}})"
        return self._roundtrip(snippet, None, timeout)
