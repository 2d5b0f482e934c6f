"""The grader itself: whatever a learner writes becomes feedback, never a crash or a hang."""
import hashlib
import subprocess
import sys
import time

import nbformat
import numpy as np
import pytest

from engine.attention import attention_mask
from engine.grader import check, check_part, get_task, runner
from engine.grader.checks.ch03_tokens import ref_merge, ref_most_frequent_pair
from engine.grader.checks.ch06_sparse_attention import ref_dot_products
from engine.grader.core import is_stub
from engine.grader.notebook import format_report, grade_notebook
from engine.layers import gelu_forward, layernorm_forward


def good_layernorm(x, g, b, eps=1e-5):
    return layernorm_forward(x, {"g": g, "b": b}, eps)[0]


def messages(task, env):
    return [r.message for r in check(task, env) if not r.passed]


def test_correct_answer_full_marks_and_partial_credit():
    assert all(r.passed for r in check("layernorm", {"layernorm": good_layernorm}))

    def big_offset_breaks(x, g, b, eps=1e-5):  # right except for the edge cases part
        if x.shape[-2:] == (1, 6) or np.abs(x).max() > 100:
            return np.zeros_like(x)
        return good_layernorm(x, g, b, eps)
    res = check("layernorm", {"layernorm": big_offset_breaks})
    assert [r.passed for r in res] == [True, False, True]  # shapes, edge cases, other eps
    assert 0 < sum(r.earned for r in res) < get_task("layernorm").points


def test_exception_becomes_feedback():
    def boom(x, g, b, eps=1e-5):
        raise KeyError("oops")
    msgs = messages("layernorm", {"layernorm": boom})
    assert msgs and all("raised KeyError: 'oops'" in m for m in msgs)
    assert "x=array of shape (2, 5, 8)" in msgs[0]  # which input


def test_wrong_shape_and_dtype():
    msgs = messages("layernorm", {"layernorm": lambda x, g, b, eps=1e-5: x[..., :1]})
    assert "returned shape (2, 5, 1), expected (2, 5, 8)" in msgs[0]
    msgs = messages("layernorm", {"layernorm": lambda x, g, b, eps=1e-5: np.full(x.shape, "a")})
    assert "dtype" in msgs[0]
    msgs = messages("gelu", {"gelu": lambda x: [object()]})
    assert "not an array of numbers" in msgs[0]
    msgs = messages("n_params", {"n_params": lambda *a: "many"})
    assert "expected a number" in msgs[0]


def test_values_message_names_index_expected_and_got():
    msgs = messages("gelu", {"gelu": lambda x: gelu_forward(x)[0] + (x > 1.5) * 0.1})
    assert "expected" in msgs[0] and "got" in msgs[0] and "at index" in msgs[0]


def test_input_mutated_in_place_is_reported():
    def mutates(x):
        x *= 0.5
        return gelu_forward(x)[0]
    msgs = messages("gelu", {"gelu": mutates})
    assert all("changed its input `x` in place" in m for m in msgs)


def test_infinite_loop_times_out(monkeypatch):
    monkeypatch.setattr(runner, "DEFAULT_TIMEOUT", 0.3)

    def forever(x):
        while True:
            try:
                pass
            except Exception:  # a learner's broad except cannot swallow the time limit
                pass
    t0 = time.monotonic()
    msgs = messages("gelu", {"gelu": forever})
    assert time.monotonic() - t0 < 10
    assert len(msgs) == 2 and all("`gelu` did not return within 0.3 s" in m for m in msgs)


def test_whole_part_time_limit(monkeypatch):
    from engine.grader import core
    monkeypatch.setattr(core, "PART_TIMEOUT", 0.5)
    monkeypatch.setattr(runner, "DEFAULT_TIMEOUT", 0.3)

    def slow(x):  # each call just under the per-call limit: the part as a whole runs out
        time.sleep(0.2)
        return gelu_forward(x)[0]
    res = check("gelu", {"gelu": slow})
    assert not res[0].passed and ("0.5 s" in res[0].message or "did not return" in res[0].message)


def test_printing_is_swallowed(capsys):
    def chatty(x):
        print("hello " * 1000)
        print("to stderr", file=sys.stderr)
        return gelu_forward(x)[0]
    assert all(r.passed for r in check("gelu", {"gelu": chatty}))
    out = capsys.readouterr()
    assert "hello" not in out.out and "to stderr" not in out.err


def test_missing_and_stub_names():
    assert "`gelu` is not defined" in messages("gelu", {})[0]

    def gelu(x):
        ...
    assert "`gelu` is still empty: replace the `...`" in messages("gelu", {"gelu": gelu})[0]
    assert "is still `...`" in messages("robot", {"robot_ids": ..., "space_robot_ids": ..., "robot_answer": ...})[0]
    assert "is not a function" in messages("gelu", {"gelu": 3})[0]
    assert is_stub(gelu) and is_stub(...) and not is_stub(good_layernorm)


def test_a_result_that_breaks_the_check_is_feedback():
    class Weird:
        def __array__(self, *a, **k):
            raise RuntimeError("no array for you")

        def __float__(self):
            raise RuntimeError("nor a float")
    for task, name in [("gelu", "gelu"), ("training_flops", "training_flops"), ("make_windows", "make_windows")]:
        msgs = messages(task, {name: lambda *a, **k: Weird()})
        assert msgs and all(isinstance(m, str) and m for m in msgs)

    def leaves(x):
        raise SystemExit(1)
    assert "called exit" in messages("gelu", {"gelu": leaves})[0]


def test_check_part_raises_assertion_with_feedback():
    check_part("gelu", 0, {"gelu": lambda x: gelu_forward(x)[0]})
    with pytest.raises(AssertionError, match=r"\[random inputs\] gelu\(x \(5,\)\): at index"):
        check_part("gelu", 0, {"gelu": lambda x: x * 0.5})


def test_references_written_for_the_grader():
    # dot-product counts by formula == the engine's masks, summed
    for kind in ("dense", "banded", "strided"):
        for T in (1, 2, 5, 17, 64):
            for a in (1, 2, 3, 7, 64):
                kw = {"banded": {"window": a}, "strided": {"stride": a}}.get(kind, {})
                assert ref_dot_products(kind, T, **kw) == attention_mask(kind, T, **kw).sum()
    # BPE step: hand-checked cases
    assert ref_most_frequent_pair([1, 2, 3, 1, 2]) == (1, 2)
    assert ref_most_frequent_pair([5, 6, 7, 7, 6, 7]) == (6, 7)
    assert ref_most_frequent_pair([4]) is None
    assert ref_merge([7, 7, 7], (7, 7), 9) == [9, 7]
    assert ref_merge([1, 2, 1, 2, 3], (1, 2), 9) == [9, 9, 3]


def _notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.mark.slow
def test_grading_a_notebook_survives_errors_hangs_and_output(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_GRADER_TIMEOUT", "1")  # the kernel inherits it
    path = tmp_path / "mine.ipynb"
    _notebook(path, [
        "import numpy as np\nimport math",
        "1 / 0",  # an error: execution goes on
        "while True:\n    pass",  # a hang: interrupted after the cell timeout
        "print('x' * 10000)",
        "def gelu(x):\n    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))",
        "def layernorm(x, g, b, eps=1e-5):\n    while True:\n        pass",  # hangs only when graded
        "def softmax_(x):\n    import sys\n    sys.exit(3)",
        "print = None",
    ])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    t0 = time.monotonic()
    rep = grade_notebook(path, cell_timeout=3, tasks=["gelu", "layernorm", "softmax"])
    assert time.monotonic() - t0 < 120
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # the learner's file is untouched
    by = {}
    for r in rep["results"]:
        by.setdefault(r["task"], []).append(r)
    assert all(r["earned"] == r["points"] for r in by["gelu"])
    assert all(r["earned"] == 0 and "`layernorm` did not return within 1 s" in r["message"] for r in by["layernorm"])
    assert "`softmax` is not defined" in by["softmax"][0]["message"]
    assert any("ZeroDivisionError" in e for e in rep["cell_errors"])
    assert len(rep["cell_errors"]) == 2  # the error and the stopped loop
    assert "cell 3: did not finish within 3 s" in rep["cell_errors"][1]
    text = format_report(rep)
    assert "gelu" in text and "total" in text and "2/" in text


@pytest.mark.slow
def test_command_line(tmp_path):
    path = tmp_path / "06_sparse_attention.ipynb"  # no otter metadata: tasks from the file name
    _notebook(path, ["import numpy as np",
                     "def banded_mask(T, window):\n    i, j = np.arange(T)[:, None], np.arange(T)\n"
                     "    return (j <= i) & (i - j < window)"])
    r = subprocess.run([sys.executable, "-m", "engine.grader", str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "banded_mask" in r.stdout and "2/2" in r.stdout
    assert "strided_mask" in r.stdout and "total" in r.stdout and "2/7" in r.stdout
    assert "`strided_mask` is not defined" in r.stdout
    r = subprocess.run([sys.executable, "-m", "engine.grader", str(tmp_path / "nope.ipynb")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "no notebook at" in r.stderr


def test_notebook_grader_shows_title_points_and_message_only():
    from engine.grader.core import NotebookGrader

    grader = NotebookGrader("05_layers")

    def ln_fixed_eps(x, g, b, eps=1e-5):  # ignores its eps: only the third part fails
        return good_layernorm(x, g, b)

    shown = repr(grader.check("layernorm", {"layernorm": ln_fixed_eps}))
    assert shown.startswith("layernorm results: ")
    assert "✅ random shapes (1 point)" in shown
    assert "❌ the eps argument: other values of eps (0 of 1 point): " in shown and "use the eps you are given" in shown
    assert "check_part" not in shown and "Error at line" not in shown and "AssertionError" not in shown
    ns = {"grader": grader, "layernorm": good_layernorm}  # a notebook's namespace: check_all reads its caller's
    exec("report = grader.check_all()", ns)
    report = ns["report"]
    text = repr(report)
    assert text.startswith(f"total: {report.score:g}/{report.total:g}")
    assert report.score == get_task("layernorm").points < report.total
    for name in ("layernorm", "gelu", "block"):
        assert name in text
    assert "still to do:" in text and "gelu" in text.split("still to do:")[1]


@pytest.mark.slow
def test_a_renamed_copy_of_a_learner_notebook_grades_without_errors(tmp_path):
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "exercises" / "02_training.ipynb"
    moved = tmp_path / "elsewhere" / "my training (copy).ipynb"
    moved.parent.mkdir()
    moved.write_bytes(src.read_bytes())
    rep = grade_notebook(moved, run_check_cells=True, return_notebook=True)
    assert rep["cell_errors"] == []
    shown = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
                      for c in rep["executed"].cells if c.cell_type == "code" for o in c.outputs)
    assert "make_windows results: 0/" in shown and "total: 0/" in shown
    assert "FileNotFoundError" not in shown and "check_part" not in shown


@pytest.mark.slow
def test_the_kernel_boundary_keeps_what_the_checks_see(tmp_path):
    # in-place changes, exception types, exits, odd results and the KV-cache count cross as data
    path = tmp_path / "boundary.ipynb"
    _notebook(path, [
        "import numpy as np, sys",
        "def layernorm(x, g, b, eps=1e-5):\n    x -= x.mean(-1, keepdims=True)\n"
        "    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g + b",
        "def gelu(x):\n    raise KeyError('oops')",
        "def softmax(logits, temperature=1.0):\n    sys.exit(3)",
        "def top_k_probs(logits, k):\n    return (i for i in range(3))",
        "def greedy_generate(model, prompt, n_new):\n    ids = list(prompt)\n    for _ in range(n_new):\n"
        "        ids.append(int(np.argmax(model.forward(np.array([ids]))[0, -1])))\n    return ids",
    ])
    rep = grade_notebook(path, cell_timeout=20, call_timeout=5,
                         tasks=["layernorm", "gelu", "softmax", "top_k", "greedy_generate"])
    by = {}
    for r in rep["results"]:
        by.setdefault(r["task"], []).append(r)
    assert all("changed its input `x` in place" in r["message"] for r in by["layernorm"])
    assert all("raised KeyError: 'oops'" in r["message"] for r in by["gelu"])
    assert all("called exit (3)" in r["message"] for r in by["softmax"])
    assert all(r["earned"] == 0 and "generator" in r["message"] for r in by["top_k"])
    greedy = {r["part"]: r for r in by["greedy_generate"]}
    assert greedy["matches the engine's greedy output"]["earned"] == 2  # right tokens, without a cache
    assert "positions through the model" in greedy["uses the cache: one new position per step"]["message"]


def test_codec_round_trips_data_and_refuses_anything_else():
    from engine.grader import codec
    from engine.grader.checks._util import tiny_model

    model = tiny_model(3)
    obj = {"a": [1, 2.5, None, True, "s", b"\x00", ..., (3, 4)], 7: np.arange(6).reshape(2, 3),
           "big": 2 ** 80, "nan": float("nan"), "f32": np.float32(1.5), "u": np.array(["x", "yz"]),
           "model": model, "cfg": model.cfg}
    back = codec.decode(codec.encode(obj)[0])
    assert back["a"] == [1, 2.5, None, True, "s", b"\x00", ..., (3, 4)] and back["big"] == 2 ** 80
    assert np.array_equal(back[7], obj[7]) and back[7].dtype == obj[7].dtype and np.isnan(back["nan"])
    assert back["f32"] == 1.5 and back["f32"].dtype == np.float32 and list(back["u"]) == ["x", "yz"]
    assert back["cfg"] == model.cfg and runner.same(back["model"].params, model.params)
    odd = codec.decode(codec.encode([object(), np.array([object()], dtype=object)])[0])
    assert isinstance(odd[0], codec.Opaque) and isinstance(odd[1], codec.Opaque)
    data = codec.encode(np.arange(4))[0]
    for bad in (b"", data[:12], data.replace(b"<i8", b"|O8"), data[:-8], b"\xff" * 40):
        with pytest.raises(codec.CodecError):
            codec.decode(bad)
