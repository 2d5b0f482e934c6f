"""Fine-tuning: the task data, prompts, loss masking, frozen parameters, exact-match accuracy."""
import numpy as np
import pytest

from engine import GPT, GPTConfig
from engine.bpe import train_bpe
from engine.finetune import (TEMPLATES, TEST_WORDS, TRAIN_WORDS, Example, encode_examples, evaluate,
                             few_shot_prompt, finetune, make_dataset, train_test_split, trainable_names)
from engine.model import tree_flatten


@pytest.fixture(scope="module")
def enc():
    lines = "".join(e.line() for e in make_dataset(TRAIN_WORDS + TEST_WORDS))
    return train_bpe(lines * 2, 400)


def test_dataset_and_prompt_format():
    ex = Example('an input that says "search"', '<input type="text" placeholder="search">')
    assert ex in make_dataset(["search"])
    assert ex.line() == '[example] an input that says "search" [toCode] <input type="text" placeholder="search">\n'
    assert ex.prompt() + ex.target() == ex.line()
    train, test = train_test_split()
    assert len(train) == len(TEMPLATES) * len(TRAIN_WORDS) and len(test) == len(TEMPLATES) * len(TEST_WORDS)
    assert not {e.line() for e in train} & {e.line() for e in test}
    assert not {w for w in TEST_WORDS if any(f'"{w}"' in e.description for e in train)}
    train2, test2 = train_test_split(unseen_words=False)
    assert not {e.line() for e in train2} & {e.line() for e in test2}
    shots = train[:2]
    p = few_shot_prompt(test[0], shots)
    assert p == shots[0].line() + shots[1].line() + test[0].prompt()


def test_only_answers_are_scored(enc):
    ex = make_dataset(["name"])[:2]
    X, Y = encode_examples(enc, ex, n_ctx=64)
    for i, e in enumerate(ex):
        p = enc.encode_ordinary(e.prompt())
        a = enc.encode_ordinary(e.target())
        assert X[i, :len(p) + len(a) - 1].tolist() == (p + a)[:-1]
        scored = Y[i][Y[i] >= 0].tolist()
        assert scored == a  # exactly the answer's tokens, each predicted from everything before it
        assert (Y[i, :len(p) - 1] == -1).all()
    with pytest.raises(ValueError, match="longer than the context"):
        encode_examples(enc, ex, n_ctx=8)


def test_trainable_selection_freezes_the_rest(enc):
    cfg = GPTConfig.preset("course-tiny", vocab_size=enc.n_vocab, n_ctx=64)
    model = GPT(cfg, seed=0)
    names = trainable_names(model, ["h.1.", "ln_f."])
    assert names and all(n.startswith(("h.1.", "ln_f.")) for n in names)
    before = {k: v.copy() for k, v in tree_flatten(model.params).items()}
    losses = finetune(model, enc, make_dataset(["name", "city"]), steps=5, lr=1e-2, trainable=["h.1.", "ln_f."])
    assert len(losses) == 5
    for k, v in tree_flatten(model.params).items():
        if k in names:
            assert not np.array_equal(v, before[k]), k
        else:
            np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="selects no parameter"):
        trainable_names(model, ["nothing."])


def test_finetuning_teaches_the_pairs(enc):
    cfg = GPTConfig.preset("course-tiny", vocab_size=enc.n_vocab, n_ctx=64, d_model=64, n_head=4)
    model = GPT(cfg, seed=0)
    data = make_dataset(["name", "city"], TEMPLATES[:2])
    assert evaluate(model, enc, data) == 0.0  # a random model writes no correct code
    losses = finetune(model, enc, data, steps=150, lr=1e-2, batch_size=4, warmup=5)
    assert losses[-1] < 0.1 * losses[0]
    acc, outputs = evaluate(model, enc, data, return_outputs=True)
    assert acc == 1.0, [(o[0].target(), o[1]) for o in outputs]


def test_right_form_is_partial_credit():
    from engine.finetune import right_form

    ex = make_dataset(["name"], TEMPLATES[:1])[0]
    assert right_form(ex, ' <input type="text" placeholder="city">\n')
    assert right_form(ex, ex.target())
    assert not right_form(ex, " <button>name</button>\n")
    assert not right_form(ex, ' <input type="text" placeholder="name"')


def test_shipped_model_learns_the_task_format():
    import engine

    model, enc = engine.load_pretrained()
    train, test = train_test_split()
    before = {k: v.copy() for k, v in tree_flatten(model.params).items()}
    losses = finetune(model, enc, train, steps=25, lr=3e-3, batch_size=8, trainable=["h.3.", "ln_f."])
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    for k, v in tree_flatten(model.params).items():
        if not k.startswith(("h.3.", "ln_f.")):
            np.testing.assert_array_equal(v, before[k])
    prompt = few_shot_prompt(test[0], train[:2])
    assert prompt.count("[toCode]") == 3 and len(enc.encode_ordinary(prompt)) < model.cfg.n_ctx


def test_vocab_words_are_many_and_never_test_words():
    import engine
    from engine.finetune import vocab_words

    _, enc = engine.load_pretrained()
    words = vocab_words(enc)
    assert len(words) > 1000 and len(set(words)) == len(words)
    assert not set(words) & set(TEST_WORDS)
    train, test = train_test_split(more_words=words)
    assert len(train) == len(TEMPLATES) * len(set(TRAIN_WORDS) | set(words))
    assert not {w for w in TEST_WORDS if any(f'"{w}"' in e.description for e in train)}
    with pytest.raises(ValueError, match="unseen_words=True"):
        train_test_split(unseen_words=False, more_words=words)


def test_random_words_are_reproducible_new_and_never_test_words():
    from engine.finetune import random_words

    words = random_words(300, seed=1)
    assert words == random_words(300, seed=1) and words != random_words(300, seed=2)
    assert len(set(words)) == 300 and not set(words) & set(TEST_WORDS)
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 8 for w in words)


def test_word_span_finds_the_word_in_the_description_and_the_answer(enc):
    from engine.finetune import word_span

    for ex in make_dataset(["search", "queen"]):
        ids, desc, ans = word_span(enc, ex)
        assert enc.decode([ids[i] for i in desc]).strip('"') in ("search", "queen")
        assert "".join(enc.decode([ids[i + 1]]) for i in ans).strip() in ("search", "queen")


def test_adapter_finetuning_leaves_the_shipped_weights_alone():
    import engine
    from engine.lora import init_adapter

    model, enc = engine.load_pretrained()
    before = {k: v.copy() for k, v in tree_flatten(model.params).items()}
    ad = init_adapter(model, rank=2, targets=("attn.c_attn.w", "mlp.c_proj.w"), layers=[0, 5])
    finetune(model, enc, train_test_split()[0][:8], steps=2, lr=1e-2, batch_size=4, adapter=ad)
    after = tree_flatten(model.params)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert sorted(changed) == sorted(ad.targets)  # the merged weights, and nothing else
    fresh, _ = engine.load_pretrained()
    for k, v in tree_flatten(fresh.params).items():
        np.testing.assert_array_equal(v, before[k])


def test_the_shipped_adapter_does_the_task_on_held_out_words():
    """Recomputes the accuracy of the shipped fine-tuned model (engine/assets/shakespeare-html)."""
    from engine.finetune import RECIPE, by_template, load_finetuned

    model, enc, adapter = load_finetuned()
    _, test = train_test_split()
    acc, outputs = evaluate(model, enc, test, return_outputs=True)
    per = by_template(outputs)
    wrong = [(o[0].description, o[1]) for o in outputs if not o[2]]
    assert acc >= 0.8 and min(per) >= 0.8, (acc, per, wrong)
    assert adapter.meta["recipe"] == RECIPE  # made by `make finetuned-model` (python -m engine finetune --recipe html)
    recorded = adapter.meta["result"]
    assert abs(acc - recorded["finetuned"]) <= 1 / len(test) + 1e-9, (acc, recorded["finetuned"])
    assert adapter.n_params() < 0.1 * model.n_params()  # small beside the model


def test_the_fine_tuned_model_has_heads_that_copy_the_word_and_the_base_model_has_none():
    import engine
    from engine.finetune import copy_attention, load_finetuned

    tuned, enc, _ = load_finetuned()
    base, _ = engine.load_pretrained()
    _, test = train_test_split()
    att_tuned, att_base = copy_attention(tuned, enc, test[::5]), copy_attention(base, enc, test[::5])
    assert att_tuned.shape == att_base.shape == (6, 6) and (att_tuned >= 0).all() and (att_tuned <= 1 + 1e-6).all()
    assert att_base.max() < 0.2 and att_tuned.max() > 0.9


# ---------------------------------------------------------------------- outputs checked before the work
def test_outputs_that_hold_earlier_work_are_refused_before_any_training(tmp_path, monkeypatch):
    from engine import finetune as F
    from engine.cli import main as cli_main

    model_dir, adapter_dir = tmp_path / "tuned", tmp_path / "adapter"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"earlier work")
    adapter_dir.mkdir()
    (adapter_dir / "adapter.json").write_text("{}")
    started = []
    monkeypatch.setattr(F, "load_model", lambda source: started.append(source))  # would start the work
    with pytest.raises(SystemExit, match="already holds a model.*--overwrite"):
        cli_main(["finetune", "--out", str(model_dir)])
    with pytest.raises(SystemExit, match="already holds an adapter"):
        cli_main(["finetune", "--lora-rank", "2", "--adapter-out", str(adapter_dir)])
    assert started == [] and (model_dir / "model.safetensors").read_bytes() == b"earlier work"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit, match="is a file"):
        F.check_outputs(tmp_path / "a_file", None)
    with pytest.raises(SystemExit, match="same folder"):
        F.check_outputs(tmp_path / "new", tmp_path / "new")
    F.check_outputs(model_dir, adapter_dir, overwrite=True)  # --overwrite: allowed
    F.check_outputs(tmp_path / "deep" / "new" / "folder", None)  # a folder still to be made: allowed
    assert not (tmp_path / "deep").exists()  # checking makes nothing


def test_an_unwritable_output_is_refused_before_any_training(tmp_path, monkeypatch):
    from engine import finetune as F

    seen = []

    def read_only(folder):  # files.check_writable's own refusal (tested with the training run's checks)
        seen.append(folder)
        raise OSError(30, f"cannot write to the output folder {folder}: it is read-only")

    monkeypatch.setattr(F, "check_writable", read_only)
    with pytest.raises(SystemExit, match="cannot write to the output folder"):
        F.check_outputs(tmp_path / "a" / "tuned", None)
    assert seen == [tmp_path]  # the nearest folder that exists: where the new one would be made
    with pytest.raises(SystemExit, match="read-only"):
        F.check_outputs(None, tmp_path)


def test_an_adapter_saved_again_replaces_both_files_whole(tmp_path):
    import engine
    from engine.lora import init_adapter, load_adapter, save_adapter

    model, _ = engine.load_pretrained()
    ad = init_adapter(model, rank=2, targets=("attn.c_attn.w",), layers=[0])
    save_adapter(tmp_path, ad)
    ad2 = init_adapter(model, rank=4, targets=("attn.c_attn.w",), layers=[0])
    save_adapter(tmp_path, ad2)
    back = load_adapter(tmp_path, model)
    assert back.rank == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["adapter.json", "adapter.safetensors"]


def test_a_read_only_output_folder_is_refused_for_real(read_only_folder):
    from engine import finetune as F

    with pytest.raises(SystemExit, match=f"cannot write to the output folder {read_only_folder}: it is read-only"):
        F.check_outputs(read_only_folder / "tuned", None)
