"""The command line: ``python -m engine info | generate | tokenize | train | finetune``.

* ``info NAME``: what a model of that shape holds and costs (parameters and where they live,
  FLOPs per token, memory, training compute), for any preset or model folder.
* ``generate``: sample text from a model folder (Hugging Face GPT-2 or a training checkpoint)
  or, by default, the shipped course model.
* ``tokenize TEXT``: how GPT-3's tokenizer (or a course tokenizer) cuts a text.
* ``train`` / ``finetune``: registered by ``engine.train`` / ``engine.finetune`` when present.

Bad input ends with a one-line ``error: ...`` on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import codecs
import json
import os
import sys
import time
from pathlib import Path

import engine  # looked up at call time: engine.load_pretrained may be replaced (the tests do)

from . import finetune, train
from .checkpoint import CheckpointError
from .config import PRESETS, GPTConfig
from .data import CorpusError
from .files import read_json
from .generate import check_sampling
from .hf import config_from_hf
from .loading import checkpoint_dir as _checkpoint_dir, load_model as _load_model
from .tokenizer import get_encoding
from .units import human, human_bytes  # noqa: F401  (human_bytes: re-exported)

NOTICE_AFTER_S = 2.0  # `generate` without --stream says that it is working once it has taken this long
TRAINING_TOKENS = 300e9  # GPT-3's training run (Brown et al. 2020, section 2.2)
PF_DAY = 1e15 * 86400  # petaflop/s-days, the unit of the GPT-3 paper's Table D.1


class CLIError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


# ---------------------------------------------------------------------- formatting
# ---------------------------------------------------------------------- info
def resolve_config(name: str) -> GPTConfig:
    """A preset name, or a folder holding a model: HF GPT-2 (config.json) or a training checkpoint."""
    if name.lower() in PRESETS:
        return GPTConfig.preset(name)
    p = Path(name)
    if p.is_dir():
        folder = _checkpoint_dir(p) or p
        if (folder / "config.json").exists():
            return config_from_hf(_read_json(folder / "config.json"))
        if (folder / "state.json").exists():
            state = _read_json(folder / "state.json")
            if not isinstance(state.get("config"), dict):
                raise CLIError(f"{folder / 'state.json'} holds no model config")
            return GPTConfig.from_dict(state["config"])
        raise CLIError(f"{p} holds no model: expected config.json (Hugging Face GPT-2) or state.json "
                       "(a training checkpoint)")
    raise CLIError(f"unknown model {name!r}: give a preset ({', '.join(PRESETS)}) or a model folder")


def _read_json(path: Path) -> dict:
    """A JSON object from a bounded regular file (a symlink to /dev/zero or a FIFO is refused, not read)."""
    try:
        return read_json(path)
    except ValueError as e:
        raise CLIError(str(e)) from None


def model_info(cfg: GPTConfig, tokens: float = TRAINING_TOKENS) -> dict:
    """Every number ``info`` prints, as a dict."""
    d, f, L = cfg.d_model, cfg.d_ff, cfg.n_layer
    parts = {
        "token_embedding": cfg.vocab_size * d,
        "position_embedding": cfg.n_ctx * d,
        "attention": L * (4 * d * d + 4 * d),
        "mlp": L * (2 * d * f + f + d),
        "layernorm": L * 4 * d + 2 * d,
    }
    n = cfg.n_params()
    assert sum(parts.values()) == n
    flops = cfg.flops_per_token()
    mem = {dt: cfg.memory_bytes(dt) for dt in ("float32", "float16")}
    train = flops["training_6N"] * tokens
    return {
        "config": cfg.to_dict() | {"d_head": cfg.d_head, "layouts": list(cfg.layer_layouts())},
        "parameters": {"total": n, "per_layer": cfg.params_per_layer(), "non_embedding": cfg.n_params(True),
                       **parts},
        "flops_per_token": flops,
        "memory_bytes": {"weights_fp32": mem["float32"]["weights"], "weights_fp16": mem["float16"]["weights"],
                         "adam_fp32": mem["float32"]["adam"],
                         "training_fp32": mem["float32"]["training_total"],
                         "training_mixed_fp16": mem["float16"]["training_total"],
                         "kv_cache_fp32": mem["float32"]["kv_cache"], "kv_cache_fp16": mem["float16"]["kv_cache"]},
        "training": {"tokens": tokens, "flops_6N": train, "pf_days": train / PF_DAY},
    }


def format_info(info: dict) -> str:
    c, p, fl, m, t = (info[k] for k in ("config", "parameters", "flops_per_token", "memory_bytes", "training"))
    n = p["total"]
    layouts = c["layouts"]
    kinds = sorted(set(layouts), key=layouts.index)
    lay = (layouts[0] if len(kinds) == 1 else
           "alternating dense / banded" if c["attention"] == "alternating" else ", ".join(layouts))
    rows = [
        f"{c['name'] or 'custom model'}: {c['n_layer']} layers, d_model {c['d_model']}, {c['n_head']} heads of "
        f"{c['d_head']}, d_ff {c['d_ff']}, n_ctx {c['n_ctx']}, vocabulary {c['vocab_size']:,}",
        f"attention: {lay}" + (f" (window {c['window']})" if "banded" in kinds else "")
        + (f" (stride {c['stride']}, c {c['fixed_c']})" if {"strided", "fixed"} & set(kinds) else ""),
        "",
        "parameters",
    ]

    def row(label, value, note=""):
        rows.append(f"  {label:<28}{value:>22}  {note}".rstrip())

    row("total", f"{n:,}", human(n))
    row("per layer", f"{p['per_layer']:,}", "12 d^2 + 13 d" if c["d_ff"] == 4 * c["d_model"] else "")
    row("non-embedding", f"{p['non_embedding']:,}", human(p["non_embedding"]))
    for key, label in (("token_embedding", "token embedding (wte)"), ("position_embedding", "position embedding"),
                       ("attention", "attention"), ("mlp", "MLP"), ("layernorm", "LayerNorm")):
        row(label, f"{p[key]:,}", f"{100 * p[key] / n:.1f}%")
    rows += ["", f"FLOPs per token (context {c['n_ctx']})"]
    row("forward", human(fl["forward"], "FLOP"), "weights + the keys each layout keeps")
    row("forward, dense attention", human(fl["forward_dense_attention"], "FLOP"), "2N + 2 n_layer n_ctx d_model")
    row("training, 6N", human(fl["training_6N"], "FLOP"), "forward + backward, attention ignored")
    row("training, with attention", human(fl["training"], "FLOP"), "3 x forward")
    rows += ["", "memory"]
    row("weights fp32 / fp16", f"{human_bytes(m['weights_fp32'])} / {human_bytes(m['weights_fp16'])}")
    row("Adam moments (fp32)", human_bytes(m["adam_fp32"]))
    row("training fp32 / mixed fp16", f"{human_bytes(m['training_fp32'])} / {human_bytes(m['training_mixed_fp16'])}",
        "weights + grads + Adam (+ fp32 master)")
    row("KV cache fp32 / fp16", f"{human_bytes(m['kv_cache_fp32'])} / {human_bytes(m['kv_cache_fp16'])}",
        f"one sequence of {c['n_ctx']} tokens")
    rows += ["", f"training on {human(t['tokens'])} tokens"]
    row("compute (6 N D)", f"{t['flops_6N']:.3g} FLOP", f"{t['pf_days']:,.4g} petaflop/s-days")
    return "\n".join(rows)


def run_info(args) -> int:
    info = model_info(resolve_config(args.model), args.tokens)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


# ---------------------------------------------------------------------- loading models
def load_model(path, backend=None, dtype: str = "float32"):
    """(GPT, tokenizer) from a model folder: Hugging Face GPT-2 or a training checkpoint (``loading.load_model``)."""
    return _load_model(Path(path), backend=backend, dtype=dtype)


def default_model(backend=None, dtype: str = "float32"):
    """The shipped course model, through ``engine.load_pretrained()`` when this version has one."""
    fn = getattr(engine, "load_pretrained", None)
    if fn is None:
        raise CLIError("no --model given and this version ships no course model (engine.load_pretrained is "
                       "missing); pass --model PATH to a model folder")
    got = fn()
    model, enc = (got if isinstance(got, tuple) else (got, None))
    if enc is None:
        enc = get_encoding("r50k_base")
    if backend is not None or dtype != model.dtype:
        model = model.to(backend, dtype)
    return model, enc


# ---------------------------------------------------------------------- generate
def run_generate(args) -> int:
    if args.max_new_tokens < 0:
        raise CLIError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.seed is not None and args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    model, enc = (load_model(args.model, args.backend, args.dtype) if args.model
                  else default_model(args.backend, args.dtype))
    if enc.n_vocab > model.cfg.vocab_size:
        raise CLIError(f"the tokenizer has {enc.n_vocab:,} ids but the model only {model.cfg.vocab_size:,}")
    eot = enc.eot_token if enc.eot_token < model.cfg.vocab_size else None
    if args.prompt:
        ids = enc.encode(args.prompt, allowed_special="all")
    elif eot is not None:
        ids = [eot]  # no prompt: an unconditional sample starts after <|endoftext|>, as GPT-2's did
    else:
        raise CLIError("give a --prompt (this model's vocabulary has no <|endoftext|> to start from)")
    kw = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
              use_cache=not args.no_cache, stop=None if args.no_stop or eot is None else eot,
              overflow=args.overflow)
    # Check everything before printing anything, and in the command line's own words.
    check_sampling(args.temperature, args.top_k, args.top_p)
    n_ctx = model.cfg.n_ctx
    if args.overflow == "error" and len(ids) + args.max_new_tokens > n_ctx:
        raise CLIError(f"the prompt ({len(ids)} tokens) + --max-new-tokens {args.max_new_tokens} exceeds the "
                       f"model's context of {n_ctx} tokens; ask for fewer tokens or pass --overflow slide")
    model.check_ids(ids, name="the prompt's tokens", allow_long=args.overflow == "slide")
    out = sys.stdout
    if args.prompt:
        out.write(args.prompt)
    if args.stream:
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a token may end mid-character
        for t in model.generate_stream(ids, args.max_new_tokens, **kw):
            out.write(dec.decode(enc.decode_single_token_bytes(t)))
            out.flush()
        out.write(dec.decode(b"", final=True))
    else:
        out.flush()
        new, t0, told = [], time.monotonic(), False
        for t in model.generate_stream(ids, args.max_new_tokens, **kw):  # what generate() does, token by token
            new.append(t)
            if not told and time.monotonic() - t0 >= NOTICE_AFTER_S and len(new) < args.max_new_tokens:
                print(f"generating {args.max_new_tokens} tokens ({len(new)} so far; --stream prints them as they "
                      "come)...", file=sys.stderr, flush=True)
                told = True
        out.write(enc.decode(new))
    out.write("\n")
    return 0


# ---------------------------------------------------------------------- tokenize
def run_tokenize(args) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    enc = get_encoding(args.encoding)
    ids = enc.encode(text, allowed_special="all")
    pieces = [enc.decode_single_token_bytes(i) for i in ids]
    if args.json:
        print(json.dumps({"encoding": enc.name, "count": len(ids), "ids": ids,
                          "pieces": [b.decode("utf-8", errors="replace") for b in pieces]}, ensure_ascii=False))
        return 0
    print(f"{len(ids)} tokens ({len(text)} characters, {len(text.encode())} bytes), encoding {enc.name}")
    for i, b in zip(ids, pieces):
        s = b.decode("utf-8", errors="replace")
        print(f"{i:>8}  {s!r}" + ("" if s.encode() == b else f"  (bytes {b.hex(' ')})"))
    print("ids:", " ".join(map(str, ids)))
    return 0


# ---------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description="How GPT-3 Works: the course engine")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="parameters, FLOPs and memory of a model",
                       description="Parameters (and where they live), FLOPs per token, memory and training compute.")
    s.add_argument("model", help=f"a preset ({', '.join(PRESETS)}) or a model folder")
    s.add_argument("--tokens", type=float, default=TRAINING_TOKENS, help="training tokens (default 300e9)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=run_info)

    s = sub.add_parser("generate", help="sample text from a model",
                       description="Continue a prompt with a model folder (Hugging Face GPT-2 or a training "
                                   "checkpoint), or the shipped course model by default.")
    s.add_argument("--model", help="model folder (default: the shipped course model)")
    s.add_argument("--prompt", default="", help="text to continue (default: start from <|endoftext|>)")
    s.add_argument("--max-new-tokens", type=int, default=50)
    s.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--no-cache", action="store_true", help="recompute the whole context every step")
    s.add_argument("--stream", action="store_true", help="print tokens as they come")
    s.add_argument("--no-stop", action="store_true", help="do not stop at <|endoftext|>")
    s.add_argument("--overflow", choices=("error", "slide"), default="error",
                   help="past n_ctx: refuse (default) or keep the last n_ctx tokens")
    s.add_argument("--backend", default=None, help="numpy, cupy or auto (default: $ENGINE_BACKEND, else auto)")
    s.add_argument("--dtype", default="float32", choices=("float32", "float64", "float16"))
    s.set_defaults(func=run_generate)

    s = sub.add_parser("tokenize", help="show how a text is cut into tokens")
    s.add_argument("text", help="the text ('-' reads standard input)")
    s.add_argument("--encoding", default="r50k_base", help="r50k_base (alias gpt2) or a .tiktoken file / folder")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_tokenize)

    # Training commands live with the training code.
    for name, add_fn, run_fn, helptext in (
            ("train", train.add_train_arguments, train.run_train, "train a GPT from scratch"),
            ("finetune", finetune.add_finetune_arguments, finetune.run_finetune, "fine-tune a GPT on a task")):
        s = sub.add_parser(name, help=helptext)
        add_fn(s)
        s.set_defaults(func=_runner(run_fn))
    return p


def _user_errors() -> tuple:
    """Exceptions that mean "your input is wrong" and carry a message written for the user."""
    errors = [CLIError, ValueError, TypeError, FileNotFoundError, IsADirectoryError, ImportError, CheckpointError,
              CorpusError]
    return tuple(errors)


def _runner(run):
    def call(args):
        run(args)
        return 0
    return call


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or argparse's own usage error (already printed)
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except _user_errors() as e:
        msg = str(e).strip() or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `python -m engine info gpt3-175b | head`: the reader left, nothing is wrong
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as e:  # the disk is full, a folder read-only, a path a file: the machine's words, one line
        msg = e.strerror or str(e) or type(e).__name__
        if e.filename and str(e.filename) not in msg:
            msg += f": {e.filename}"
        print(f"error: {msg}", file=sys.stderr)
        return 2
