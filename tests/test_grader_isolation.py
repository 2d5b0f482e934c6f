"""The shell grader against a hostile or careless notebook: the score depends only on the answers.

Each test is one attack from issue 26, graded through ``grade_notebook`` (a real kernel) with
short deadlines, with the score and the message it must get.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from engine.grader import get_task
from engine.grader.notebook import grade_notebook

pytestmark = pytest.mark.slow

GELU = ("import numpy as np, math\n"
        "def gelu(x):\n    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))")
LAYERNORM = ("import numpy as np\n"
             "def layernorm(x, g, b, eps=1e-5):\n    mu = x.mean(-1, keepdims=True)\n"
             "    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b")
BANDED = ("import numpy as np\n"
          "def banded_mask(T, window):\n    i, j = np.arange(T)[:, None], np.arange(T)\n"
          "    return (j <= i) & (i - j < window)")


def _notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def _by_task(rep):
    out = {}
    for r in rep["results"]:
        out.setdefault(r["task"], []).append(r)
    return out


def _score(rep, task):
    return sum(r["earned"] for r in _by_task(rep)[task])


def _full(rep, task):
    return _score(rep, task) == get_task(task).points


FAKE = ("[{'task': t, 'part': 'all', 'points': 1000.0, 'earned': 1000.0, 'message': 'passed'} "
        "for t in tasks]")


def test_replacing_the_grader_in_the_notebook_changes_nothing(tmp_path):
    # all answers still `...`; the last cell replaces grade_env (once with the real points, once with
    # 1000 a part), check, the tasks' points and the runner's comparisons: none of it runs in the grader
    path = _notebook(tmp_path / "fake.ipynb", [
        "def gelu(x):\n    ...",
        "def layernorm(x, g, b, eps=1e-5):\n    ...",
        "import engine.grader as g, engine.grader.core as core, engine.grader.runner as runner\n"
        "g.grade_env = lambda env, tasks: [dict(r, earned=r['points']) for r in []]\n"
        f"core.grade_env = g.grade_env = lambda env, tasks: {FAKE}\n"
        "core.check = g.check = lambda name, env, part=None: []\n"
        "for t in core.REGISTRY.values():\n    for p in t.parts:\n        p.points = 1000; p.fn = lambda *a: None\n"
        "runner.close = runner.number = runner.as_array = lambda *a, **k: None",
    ])
    rep = grade_notebook(path, cell_timeout=20, call_timeout=3, tasks=["gelu", "layernorm"])
    assert rep["cell_errors"] == []
    assert rep["score"] == 0 and rep["total"] == get_task("gelu").points + get_task("layernorm").points == 5
    assert all("is still empty: replace the `...`" in r["message"] for r in rep["results"])


def test_rewriting_print_or_numpy_in_the_kernel_changes_nothing(tmp_path):
    marker = '@@ENGINE_GRADER_RESULTS@@' + json.dumps([{"task": "gelu", "part": "random inputs", "points": 1.0,
                                                        "earned": 1.0, "message": "passed"}])
    path = _notebook(tmp_path / "patched.ipynb", [
        LAYERNORM,
        "import numpy as np\ndef gelu(x):\n    return x * 0.5",  # wrong
        "import builtins, sys\n"
        f"builtins.print = lambda *a, **k: sys.__stdout__.write({marker!r})\n"
        "np.abs = lambda x: np.zeros_like(x)\nnp.allclose = lambda *a, **k: True\n"
        "np.array_equal = lambda *a, **k: True\nnp.isfinite = lambda x: np.ones_like(x, bool)",
    ])
    rep = grade_notebook(path, cell_timeout=20, call_timeout=3, tasks=["layernorm", "gelu"])
    assert _full(rep, "layernorm")  # the right answer keeps its marks
    assert _score(rep, "gelu") == 0
    assert all("expected" in r["message"] and "got" in r["message"] for r in _by_task(rep)["gelu"])
    assert rep["score"] == get_task("layernorm").points


def test_answers_that_call_the_engine_are_refused_and_the_function_named(tmp_path):
    path = _notebook(tmp_path / "engine.ipynb", [
        "import engine\nfrom engine.layers import gelu_forward as gf\n"
        "from engine.grader.checks.ch03_tokens import ref_merge",
        "def layernorm(x, g, b, eps=1e-5):\n    return engine.layers.layernorm_forward(x, {'g': g, 'b': b}, eps)[0]",
        "def gelu(x):\n    try:\n        return gf(x)[0]\n    except BaseException:\n        return 0.5 * x",
        "def merge(ids, pair, new_id):\n    return ref_merge(ids, pair, new_id)",  # the grader's own reference
        "_ = gf(__import__('numpy').ones(3))",  # outside graded calls the engine works as usual
        BANDED,
    ])
    rep = grade_notebook(path, cell_timeout=20, call_timeout=3, tasks=["layernorm", "gelu", "merge", "banded_mask"])
    assert rep["cell_errors"] == []
    by = _by_task(rep)
    assert all(r["earned"] == 0 and "`engine.layers.layernorm_forward` from the engine" in r["message"]
               and "refused" in r["message"] for r in by["layernorm"])
    assert all(r["earned"] == 0 and "`engine.layers.gelu_forward`" in r["message"] for r in by["gelu"])
    assert all(r["earned"] == 0 and "`engine.grader.checks.ch03_tokens.ref_merge`" in r["message"] for r in by["merge"])
    assert _full(rep, "banded_mask")


def test_a_notebook_cannot_reach_another_submission(tmp_path):
    # graded together: the first reads its parent's command line (and its parent's), and overwrites
    # every other notebook it finds there and in its working folder with an unsolved copy
    import shutil
    import tempfile

    box = Path(tempfile.mkdtemp())  # where the attacker reports what it saw: learner code may run as nobody
    os.chmod(box, 0o777)
    seen = box / "seen.json"
    (tmp_path / "victim").mkdir()
    victim = _notebook(tmp_path / "victim" / "06_sparse_attention.ipynb", [BANDED])
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    attacker = _notebook(tmp_path / "06_sparse_attention_attacker.ipynb", [
        "import os, json, glob\n"
        "def cmdline(pid):\n    try:\n        return open(f'/proc/{pid}/cmdline', 'rb').read().decode().split('\\0')\n"
        "    except OSError:\n        return []\n"
        "def ppid(pid):\n    for line in open(f'/proc/{pid}/status'):\n"
        "        if line.startswith('PPid:'):\n            return int(line.split()[1])\n"
        "parent = cmdline(os.getppid())\n"
        "found, pid = [], os.getppid()\n"
        "while pid and pid > 1:\n    found += [a for a in cmdline(pid) if a.endswith('.ipynb')]\n    pid = ppid(pid)\n"
        "found += glob.glob(os.path.join(os.getcwd(), '*.ipynb'))\n"
        f"json.dump({{'parent': parent, 'cwd': os.getcwd(), 'found': found}}, open({str(seen)!r}, 'w'))\n"
        "for f in found:\n    if 'attacker' not in f:\n        try:\n"
        "            open(f, 'w').write('{\"cells\": [], \"metadata\": {}, \"nbformat\": 4, \"nbformat_minor\": 5}')\n"
        "        except OSError:\n            pass",
    ])
    r = subprocess.run([sys.executable, "-m", "engine.grader", str(attacker), str(victim), "--json",
                        "--task", "banded_mask"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    reports = json.loads(r.stdout)
    assert [rep["score"] for rep in reports] == [0, 2]  # the victim keeps its marks
    info = json.loads(seen.read_text())
    shutil.rmtree(box)
    assert str(victim) in info["found"]  # walking up to the command that named both, the attack found it
    assert str(victim) not in " ".join(info["parent"]) and "victim" not in " ".join(info["parent"])
    assert all(str(tmp_path) not in a for a in info["parent"])  # the parent names only the private copy
    assert not info["cwd"].startswith(str(tmp_path))
    from engine.grader.kernel import unprivileged_user
    if unprivileged_user()[0]:  # as root: learner code is nobody, who cannot write the grader's files
        assert hashlib.sha256(victim.read_bytes()).hexdigest() == digest and "changed on disk" not in r.stderr
    elif hashlib.sha256(victim.read_bytes()).hexdigest() != digest:  # the same user: it could, and we say so
        assert "changed on disk while grading" in r.stderr


def test_a_function_that_loops_inside_try_except_costs_only_its_task(tmp_path):
    path = _notebook(tmp_path / "loop.ipynb", [
        LAYERNORM,
        "def gelu(x):\n    while True:\n        try:\n            pass\n        except BaseException:\n            pass",
    ])
    rep = grade_notebook(path, cell_timeout=20, call_timeout=2, tasks=["gelu", "layernorm"])
    assert _full(rep, "layernorm")
    assert all(r["earned"] == 0 and r["message"].startswith("`gelu` did not return within 2 s")
               for r in _by_task(rep)["gelu"])


def test_a_cell_that_ignores_the_interrupt_or_sets_its_own_alarm_is_stopped(tmp_path):
    path = _notebook(tmp_path / "stuck.ipynb", [
        GELU,
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        "import signal, time\nsignal.signal(signal.SIGALRM, lambda *a: None)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)\n"
        "def layernorm(x, g, b, eps=1e-5):\n    while True:\n        try:\n            time.sleep(0.01)\n"
        "        except BaseException:\n            pass",
        BANDED,
    ])
    rep = grade_notebook(path, cell_timeout=3, call_timeout=2, tasks=["gelu", "layernorm", "banded_mask"])
    assert _full(rep, "gelu") and _full(rep, "banded_mask")  # defined before and after the stuck cell
    assert rep["cell_errors"] == ["cell 2: did not finish within 3 s and was stopped; the cells after it ran in "
                                  "a fresh kernel"]
    assert all(r["earned"] == 0 and "`layernorm` did not return within 2 s" in r["message"]
               for r in _by_task(rep)["layernorm"])
    assert rep["score"] == get_task("gelu").points + get_task("banded_mask").points


def test_os_exit_costs_only_the_cell_or_task_that_called_it(tmp_path):
    path = _notebook(tmp_path / "dies.ipynb", [
        GELU,
        "import os\nos._exit(1)",
        "import os\ndef layernorm(x, g, b, eps=1e-5):\n    os._exit(3)",
        BANDED,
    ])
    rep = grade_notebook(path, cell_timeout=20, call_timeout=3, tasks=["gelu", "layernorm", "banded_mask"])
    assert _full(rep, "gelu") and _full(rep, "banded_mask")
    assert len(rep["cell_errors"]) == 1 and rep["cell_errors"][0].startswith("cell 2: stopped the Python kernel")
    assert all(r["earned"] == 0 and r["message"].startswith("`layernorm` stopped the Python kernel")
               for r in _by_task(rep)["layernorm"])


def test_memory_and_output_caps(tmp_path):
    path = _notebook(tmp_path / "big.ipynb", [
        "import numpy as np\nhog = np.ones(2 ** 34)",  # 128 GB: over the cap, a MemoryError
        "print('x' * (3 * 2 ** 20))",  # 3 MB: over a 1 MB output cap
        GELU,
    ])
    rep = grade_notebook(path, cell_timeout=20, call_timeout=3, tasks=["gelu"], memory_mb=2048, output_mb=1)
    assert _full(rep, "gelu")
    assert rep["cell_errors"][0].startswith("cell 1: MemoryError")
    assert rep["cell_errors"][1].startswith("cell 2: printed more than 1 MB")


def test_the_graded_file_is_only_read(tmp_path):
    path = _notebook(tmp_path / "mine.ipynb", [GELU, "open(__import__('glob').glob('*.ipynb')[0], 'w').write('x')"])
    os.chmod(path, 0o444)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    rep = grade_notebook(path, cell_timeout=20, call_timeout=3, tasks=["gelu"])
    assert _full(rep, "gelu") and rep["cell_errors"] == []  # it overwrote its private copy, nothing else
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def _dropping():
    from engine.grader.kernel import unprivileged_user

    user, why = unprivileged_user()
    if os.geteuid() != 0:
        assert user is None and "not running as root" in why
        pytest.skip("the grader is not root: learner code runs as the grader's own user, there is nothing to drop")
    assert user is not None, why  # as root it must work, also where Python lives under /root (mode 0700)
    return user


PROBE = """import json, os, resource
def attempt(what, f, *a):
    try:
        f(*a)
        out[what] = 'done'
    except (OSError, ValueError) as e:
        out[what] = type(e).__name__
def write(p):
    open(p, 'a').close()
out = {'uid': os.getuid(), 'ids': [*os.getresuid(), *os.getresgid(), *os.getgroups()]}
attempt('setuid 0', os.setuid, 0)
attempt('setgid 0', os.setgid, 0)
for name, p in PATHS.items():
    attempt('write ' + name, write, p)
attempt('read other copy', lambda: open(PATHS['other copy']).read())
attempt('list other folder', os.listdir, os.path.dirname(PATHS['other copy']))
attempt('list other outer', os.listdir, os.path.dirname(os.path.dirname(PATHS['other copy'])))
attempt('read own connection file', lambda: open(open('/proc/self/cmdline').read().split(chr(0))[-2]).read())
attempt('raise memory cap', resource.setrlimit, resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
out['memory cap'] = resource.getrlimit(resource.RLIMIT_AS)[0]
kernels = {}  # the other kernels running now: their user ids, and whether this one may signal them
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        if b'engine.grader.launch' in open(f'/proc/{pid}/cmdline', 'rb').read() and int(pid) != os.getpid():
            uid = next(int(l.split()[1]) for l in open(f'/proc/{pid}/status') if l.startswith('Uid:'))
            kernels[pid] = uid
            attempt('signal kernel ' + pid, os.kill, int(pid), 0)  # signal 0: only the permission check
    except (OSError, StopIteration):
        pass
out['other kernels'] = kernels
print(json.dumps(out))
"""


def test_learner_code_runs_unprivileged_when_the_grader_is_root(tmp_path):
    import pwd
    import threading
    import time

    user = _dropping()
    # another submission graded at the same time (as the same named user): its kernel waits in a cell
    (tmp_path / "other").mkdir()
    other = _notebook(tmp_path / "other" / "06_sparse_attention.ipynb", [BANDED, "import time\ntime.sleep(30)"])
    before = set(Path("/tmp").glob("engine-grader-*"))
    done = {}
    t = threading.Thread(target=lambda: done.update(rep=grade_notebook(other, cell_timeout=40, call_timeout=3,
                                                                       tasks=["banded_mask"])))
    t.start()
    copy = None
    for _ in range(600):  # the other kernel's private copy, as root sees it, once given to its kernel's group
        found = [p for d in set(Path("/tmp").glob("engine-grader-*")) - before for p in d.glob("*/*.ipynb")]
        if found and found[0].stat().st_gid != 0:
            copy = found[0]
            break
        time.sleep(0.1)
    assert copy is not None
    paths = {"other copy": str(copy), "other notebook": str(other), "graded file": str(tmp_path / "who.ipynb"),
             "grader folder": str(tmp_path / "planted"), "other folder": str(copy.parent / "planted"),
             "own outer folder": "../planted"}
    path = _notebook(tmp_path / "who.ipynb", [f"PATHS = {paths!r}\n" + PROBE,
                                              "import os\nrobot_ids = [os.getuid()]\nspace_robot_ids = [0]\n"
                                              "robot_answer = 'B'"])
    digests = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in (path, other, copy)}
    rep = grade_notebook(path, cell_timeout=20, call_timeout=3, tasks=["robot"], memory_mb=3000,
                         return_notebook=True)
    unchanged = all(hashlib.sha256(Path(p).read_bytes()).hexdigest() == d for p, d in digests.items())
    t.join()  # (the other copy is removed once its notebook is graded)
    assert rep["cell_errors"] == [] and "unprivileged user" in rep["isolation"]
    out = json.loads(rep["executed"].cells[0].outputs[0]["text"])
    pw = pwd.getpwnam(user)
    uid = out["uid"]
    assert uid != 0 and 0 not in out["ids"] and set(out["ids"]) == {uid}  # a user and group id of its own
    assert uid != pw.pw_uid and 61184 <= uid < 65519
    assert out["setuid 0"] == out["setgid 0"] == "PermissionError"
    refused = {k: v for k, v in out.items() if k.startswith(("write", "read", "list"))}
    assert len(refused) == 10 and set(refused.values()) == {"PermissionError"}, refused
    assert out["raise memory cap"] == "ValueError" and out["memory cap"] == 3000 * 2 ** 20
    # the other submission's kernel runs as another user, which this one cannot signal, stop or kill
    others = {pid: u for pid, u in out["other kernels"].items() if u != 0}
    assert others and uid not in others.values()
    assert all(out["signal kernel " + pid] == "PermissionError" for pid in others), out
    assert f"are not [{uid}]" in rep["results"][0]["message"]  # the graded call ran as that user too
    assert unchanged and not (tmp_path / "planted").exists()
    assert done["rep"]["score"] == get_task("banded_mask").points  # the other one keeps its marks


def test_a_forking_learner_is_capped_after_the_drop(tmp_path):
    import tempfile
    import time

    _dropping()
    box = Path(tempfile.mkdtemp())  # the escaped process writes its pid here
    os.chmod(box, 0o777)
    path = _notebook(tmp_path / "forks.ipynb", [
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        open({str(box / 'pid')!r}, 'w').write(str(os.getpid()))\n        time.sleep(120)\n"
        "    os._exit(0)",  # a process in a session of its own, outside the kernel's process group
        "import os, time\nkids, error = 0, None\n"
        "while kids < 2000:\n    try:\n        pid = os.fork()\n    except OSError as e:\n"
        "        error = type(e).__name__\n        break\n    if pid == 0:\n        time.sleep(120)\n"
        "        os._exit(0)\n    kids += 1\nprint(kids, error)",
        GELU,
    ])
    rep = grade_notebook(path, cell_timeout=60, call_timeout=3, tasks=["gelu"], return_notebook=True)
    kids, error = rep["executed"].cells[1].outputs[0]["text"].split()
    assert int(kids) < 256 and error == "BlockingIOError"  # RLIMIT_NPROC, counted for the user
    assert _full(rep, "gelu")
    pid = int((box / "pid").read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    (box / "pid").unlink()
    box.rmdir()


def test_each_kernel_gets_an_id_no_other_holds(monkeypatch):
    # an id reserved by another grader process is never handed out here, nor one handed out twice
    import secrets

    from engine.grader import launch

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom engine.grader.launch import private_id\n"
                               "print(private_id(), flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        taken = int(holder.stdout.readline())
        lo, hi = launch.ID_RANGE
        assert lo <= taken < hi
        picks = iter([taken - lo] * 3 + list(range(hi - lo)))
        monkeypatch.setattr(secrets, "randbelow", lambda n: next(picks))
        mine = launch.private_id()
        assert mine != taken
        again = launch.private_id()  # while this process still holds `mine`
        assert again not in (mine, taken)
        launch.release_id(mine)
        launch.release_id(again)
    finally:
        holder.kill()
        holder.wait()
