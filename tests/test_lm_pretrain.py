"""Chapter 04's tiny LM pre-training on the course corpus."""

from __future__ import annotations

import torch

from molmo_lite import lm_pretrain
from molmo_lite.config import LLMConfig
from molmo_lite.llm import LLM
from molmo_lite.tokenizer import MolmoTokenizer

SMALL = LLMConfig(vocab_size=512, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, rope_theta=1e4,
                  tie_embeddings=True, additional_vocab=128)


def test_pack_lines_joins_with_eos_and_cuts_windows():
    tok = MolmoTokenizer.tiny()
    lines = ["a red circle at the top left", " User: clocks: What time is it? Assistant: 3:45"] * 10
    windows = lm_pretrain.pack_lines(tok, lines, seq_len=16)
    flat = sum((tok.encode(line) + [tok.eos_id] for line in lines), [])
    assert windows.shape == (len(flat) // 17, 17)
    assert windows.flatten().tolist() == flat[: windows.numel()]


def test_untrained_loss_is_near_uniform_and_training_lowers_it():
    torch.manual_seed(0)
    tok = MolmoTokenizer.tiny()
    from molmo_lite.data.corpus import course_corpus

    windows = lm_pretrain.pack_lines(tok, course_corpus(400, seed=0), seq_len=32)
    model = LLM(SMALL)
    before = lm_pretrain.evaluate_loss(model, windows)
    assert abs(before - torch.log(torch.tensor(512.0)).item()) < 0.5  # small init: logits near 0
    lm_pretrain.train_lm(model, windows, steps=40, batch_size=16, lr=1e-2)
    assert lm_pretrain.evaluate_loss(model, windows) < 0.7 * before


def test_complete_stops_at_eos_and_decodes_text():
    tok = MolmoTokenizer.tiny()
    model = LLM(SMALL).eval()
    texts = lm_pretrain.complete(model, tok, [" long_caption 40:", " User: hi Assistant:"], max_new_tokens=5)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_tiny_lm_is_rebuilt_when_missing(tmp_path, monkeypatch):
    calls = []

    def fake_pretrain(steps, **kwargs):
        calls.append(steps)
        return LLM(SMALL), MolmoTokenizer.tiny(), {"heldout_loss_before": 6.2, "heldout_loss_after": 3.1}

    monkeypatch.setattr(lm_pretrain, "pretrain_tiny_lm", fake_pretrain)
    first = lm_pretrain.tiny_lm(tmp_path / "lm", steps=3)
    second = lm_pretrain.tiny_lm(tmp_path / "lm", steps=3)
    assert calls == [3] and first.config == second.config == SMALL


def test_corpus_kinds_select_line_kinds_and_all_kinds_is_the_chapter_04_corpus():
    from molmo_lite.data.corpus import KINDS, course_corpus

    assert course_corpus(60, seed=3, kinds=KINDS) == course_corpus(60, seed=3)
    text_only = course_corpus(300, seed=3, kinds=("caption", "qa", "clock"))
    assert not any("<point" in line or "There are none" in line for line in text_only)
    assert any("<point" in line for line in course_corpus(300, seed=3))
    import pytest

    with pytest.raises(ValueError, match="subset"):
        course_corpus(5, kinds=("pictures",))


def test_tiny_lm_of_fewer_kinds_has_its_own_checkpoint_folder(tmp_path, monkeypatch):
    seen = []

    def fake_pretrain(steps, **kwargs):
        seen.append(kwargs["kinds"])
        return LLM(SMALL), MolmoTokenizer.tiny(), {"heldout_loss_before": 6.2, "heldout_loss_after": 3.1}

    monkeypatch.setattr(lm_pretrain, "pretrain_tiny_lm", fake_pretrain)
    monkeypatch.setattr(lm_pretrain, "CHECKPOINT_DIR", tmp_path)
    lm_pretrain.tiny_lm(kinds=("qa", "caption"))
    assert seen == [("caption", "qa")] and (tmp_path / "tiny_lm_caption-qa" / "model.safetensors").exists()
