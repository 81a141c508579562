"""The oracle harness: the course's LLM with perfect image features, pointing and counting only (chapter 10).

    python -m benchmarks.oracle                       # the best configuration (DEFAULT), 10 training minutes
    python -m benchmarks.oracle NAME [--minutes 10] [--heldout 200] [--evals 5]
    python -m benchmarks.oracle --list                # the configurations and what each changes

Each configuration is an ``molmo_lite.oracle.OracleConfig``: the LLM's geometry, its optimiser, the layout and the
training scenes (the held-out scenes are always chapter 07's: 0-10 of the class asked among 0-6 others). Training
runs for ``--minutes`` of training time on this machine (the evaluations are not counted), evaluating ``--evals``
times on ``--heldout`` scenes. Writes benchmarks/results/oracle.json, one record per configuration and budget (keyed
NAME for 10 minutes, NAME-<M>min otherwise, then -seed<N> with ``--seed N``; a rerun replaces its record and keeps
the earlier headline under "previous_runs"): pointing F1, counting exact and F1 by number of targets against minutes
and steps, the final scores with the shuffled-image control, steps/s, tokens/s and the
configuration. Ends with one line:

    oracle: pointing_f1=<f> counting_exact=<f> train_minutes=<f> heldout=<n>

One run at a time on a 2-core machine (two at once run several times slower each).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import machine_info, page, replace_block
from molmo_lite.oracle import OracleConfig, train_oracle

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "oracle.json"
PAGE = ROOT / "docs" / "recipes.md"  # the table lives between its <!-- oracle-benchmark --> markers

# name -> (what it changes, relative to the configuration it names; the OracleConfig fields it sets)
CONFIGS: dict[str, tuple[str, dict]] = {
    "o0-adamw": ("the tiny LLM (4 x 128, random start), AdamW 1e-3 (cosine to 0.55x after a 50-step warmup), batch "
                 "16 scenes with one annotation each, chapter 07's world throughout (the probe's setup)", {}),
    "o1-muon": ("o0 with Muon (torch.optim.Muon, its update size matched to AdamW's) for the 2-D weights of the "
                "LLM's blocks and the projector; AdamW for the embeddings, norms and biases", {"optimizer": "muon"}),
    "o2-muon-packed": ("o1 + Molmo's multi-annotation packing: one row per scene with its three annotations "
                       "(3x the answers per step, 2.3x the time per step)",
                       {"optimizer": "muon", "pack_annotations": True}),
    "o3-muon-targets": ("o1 + a curriculum: one object alone (10% of the minutes), one target among <= 3 others "
                        "(to 25%), <= 4 among <= 4 (to 45%), then chapter 07's world",
                        {"optimizer": "muon", "curriculum": "targets"}),
    "o4-muon-lr2e-3": ("o1 at learning rate 2e-3", {"optimizer": "muon", "lr": 2e-3}),
    "o5-muon-batch8": ("o1 with batch 8: more, noisier steps in the same minutes", {"optimizer": "muon",
                                                                                   "batch_size": 8}),
    "o6-muon-question-first": ("o1 with the question before the image tokens, which can then read it (Molmo puts "
                               "the image first)", {"optimizer": "muon", "question_first": True}),
    "o7-muon-words-mimetic": ("o1 with colour and shape as the LLM's own embeddings of the question's words and "
                              "keys that start as copies of the queries (mimetic initialisation, std 0.06)",
                              {"optimizer": "muon", "features": "words", "mimetic": 0.06}),
    "o8-muon-match-bit": ("o1 + the diagnostic ceiling: each cell also says whether it holds what the question asks "
                          "for (binding done for the model; never an input of the course's model)",
                          {"optimizer": "muon", "match_bit": True}),
    "o9-muon-question-first-bf16": ("o6 with bf16 autocast (this CPU has AMX): more steps in the same minutes",
                                    {"optimizer": "muon", "question_first": True, "autocast": True}),
    "o10-qf-batch8": ("o6 with batch 8: about twice the steps in the same minutes",
                      {"optimizer": "muon", "question_first": True, "batch_size": 8}),
    "o11-qf-lr2e-3": ("o6 at learning rate 2e-3, warmup 20 steps",
                      {"optimizer": "muon", "question_first": True, "lr": 2e-3, "warmup": 20}),
    "o12-qf-targets": ("o6 + o3's curriculum over the number of targets",
                       {"optimizer": "muon", "question_first": True, "curriculum": "targets"}),
    "o13-qf-words-mimetic": ("o6 with o7's word features and mimetic initialisation",
                             {"optimizer": "muon", "question_first": True, "features": "words", "mimetic": 0.06}),
    "o14-qf-heads8": ("o6 with 8 heads of 16 dimensions (4 key/value heads) instead of 4 of 32",
                      {"optimizer": "muon", "question_first": True, "heads": 8, "kv_heads": 4}),
    "o15-qf-scene-lm": ("o6 starting from a tiny LM pre-trained on text that includes chapter 07's scenes written as "
                        "text with questions and Molmo-format answers (lm_pretrain, kind 'scene'; its minutes are "
                        "reported apart, as a released backbone's)", {"optimizer": "muon", "question_first": True,
                                                                       "lm_init": "checkpoints/tiny_lm_scene"}),
    "o16-qf-length-chunks": ("o6 with each step's 16 rows sorted by length and run as 2 chunks, each padded to its "
                             "own longest (same gradient, 37% of a step was padding) and no padding mask in training "
                             "(causal alone: 1.4x the steps per second)",
                             {"optimizer": "muon", "question_first": True, "micro_batches": 2}),
    "o17-qf-windows2x2": ("o16 with one token per 2 x 2 window of cells (16 tokens of 14 px, the real path's 2 x 2 "
                          "pooling of 7 px patches) that lists its four cells' features side by side: what a pooled "
                          "token could say at best",
                          {"optimizer": "muon", "question_first": True, "micro_batches": 2, "pool": 2}),
    "o18-qf-windows2x2-twice": ("o17 with the image's 16 tokens twice in a row, as the real path lays out a scene that "
                                "fits one crop (the overview, then the crop: the same image)",
                                {"optimizer": "muon", "question_first": True, "micro_batches": 2, "pool": 2,
                                 "copies": 2}),
}
DEFAULT = "o16-qf-length-chunks"

# lm_init folders the harness builds when missing: folder -> molmo_lite.lm_pretrain's command-line arguments
PRETRAINED = {"checkpoints/tiny_lm_scene": ["--steps", "1500", "--seq-len", "256", "--lines", "40000", "--kinds",
                                            "caption,pointing,counting,qa,clock,scene"]}


def record_key(name: str, minutes: float, seed: int = 0) -> str:
    """A configuration's key in the JSON: its name for the 10-minute budget of the table, else name-<minutes>min;
    -seed<N> after it for another seed than the configuration's 0."""
    return (name if minutes == 10 else f"{name}-{minutes:g}min") + (f"-seed{seed}" if seed else "")


def pretrained(folder: str) -> dict:
    """The LM folder an lm_init names, pre-trained first (``python -m molmo_lite.lm_pretrain``) when it is missing;
    returns that pre-training's summary (its minutes are not the harness's)."""
    path = ROOT / folder
    if not (path / "model.safetensors").exists():
        from molmo_lite import lm_pretrain

        print(f"{folder} is missing: pre-training it ({' '.join(PRETRAINED[folder])})", flush=True)
        lm_pretrain.main(PRETRAINED[folder] + ["--out", str(path)])
    return json.loads((path / "pretrain.json").read_text())


def run(name: str, minutes: float, heldout: int, evals: int, threads: int = 2, seed: int = 0) -> dict:
    lever, fields = CONFIGS[name]
    fields = fields | {"seed": seed}  # the training scenes and the initial weights; the held-out scenes stay
    if fields.get("lm_init"):
        summary = pretrained(fields["lm_init"])
        fields = fields | {"lm_init": str(ROOT / fields["lm_init"])}
    record = train_oracle(OracleConfig(**fields), minutes=minutes, heldout=heldout, evals=evals, threads=threads)
    record.pop("model")
    if fields.get("lm_init"):
        record["config"]["lm_init"] = CONFIGS[name][1]["lm_init"]  # the repository's path, not this machine's
        record["pretrain"] = summary
    record.update(name=name, lever=lever, machine=machine_info())
    return save_record(OUT, record_key(name, minutes, seed), record)


def save_record(out: Path, key: str, record: dict) -> dict:
    """Write ``record`` under ``key`` into the JSON ``out``; a rerun replaces the record and keeps the earlier
    headline under "previous_runs" (shared with benchmarks/pointing_only.py)."""
    results = json.loads(out.read_text()) if out.exists() else {}
    if key in results:
        old = results[key]
        previous = old.pop("previous_runs", [])
        record["previous_runs"] = previous + [{k: old[k] for k in ("train_minutes", "steps")} | {
            "pointing_f1": old["final"]["pointing_f1"], "counting_exact": old["final"]["counting_exact"]}]
    results[key] = record
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return record


def table(results: dict[str, dict], configs: dict[str, tuple[str, dict]] = CONFIGS) -> str:
    """The Markdown table of docs/recipes.md: one row per run, in ``configs``' order (longer budgets and other seeds
    after the 10-minute row of the same configuration); a column for the shift check (another renderer) when a
    record has one, and one for the clocks (hour right, within 3 minutes, answer-loss ratio shuffled / true images)
    when a record trained on them."""
    buckets = ("0-0", "1-3", "4-7", "8-10")
    shift = any("shift" in r for r in results.values())
    clocks = any("clocks" in r for r in results.values())
    rows = ["| configuration | what it changes | train min | steps | pointing F1 | counting exact | F1 by targets "
            "0 / 1-3 / 4-7 / 8-10 | shuffled images F1 |" + (" other renderer F1 / counting |" if shift else "")
            + (" clocks hour / 3 min / loss ratio |" if clocks else "")
            + " F1 along the curve (minutes) |",
            "|---|---|---|---|---|---|---|---|---|" + ("---|" if shift else "") + ("---|" if clocks else "")]
    def order(item):
        r = item[1]
        return list(configs).index(r["name"]), round(r["train_minutes"]), r["config"].get("seed", 0)

    for key, r in sorted(results.items(), key=order):
        seed = r["config"].get("seed", 0)
        lever = configs[r["name"]][0] if key == r["name"] else ", ".join(
            [r["name"]] + ([f"{r['train_minutes']:.0f} minutes"] if round(r["train_minutes"]) != 10 else [])
            + ([f"seed {seed}"] if seed else []))
        by = " / ".join(f"{r['final']['by_count'][b]['f1']:.2f}" if b in r["final"]["by_count"] else "-"
                        for b in buckets)
        curve = ", ".join(f"{c['pointing_f1']:.2f} ({c['minutes']:.0f})" for c in r["curve"])
        shifted = (f" {r['shift']['pointing_f1']:.2f} / {r['shift']['counting_exact']:.2f} |" if "shift" in r
                   else " - |") if shift else ""
        clock = (f" {r['clocks']['hour']:.2f} / {r['clocks']['within_3_min']:.2f} / {r['clocks']['loss_ratio']:.2f} |"
                 if "clocks" in r else " - |") if clocks else ""
        rows.append(f"| {key} | {lever} | {r['train_minutes']:.1f} | {r['steps']} | "
                    f"{r['final']['pointing_f1']:.2f} | {r['final']['counting_exact']:.2f} | {by} | "
                    f"{r['shuffled']['pointing_f1']:.2f} |{shifted}{clock} {curve} |")
    return "\n".join(rows)


def harness_main(argv: list[str] | None, doc: str, configs: dict[str, tuple[str, dict]], default: str,
                 run_fn, out: Path, block: str) -> dict | None:
    """The command line both harnesses share: NAME [--minutes --heldout --evals --seed], --list, --table. Runs
    ``run_fn(name, minutes, heldout, evals, seed=seed)`` and rewrites the table between ``block``'s markers of its
    page from ``out``; -> the run's record (None for --list and --table)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default=default, choices=sorted(configs))
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes (default 10)")
    parser.add_argument("--heldout", type=int, default=200, help="held-out scenes (default 200)")
    parser.add_argument("--evals", type=int, default=5, help="evaluations during training (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="another seed, to measure run-to-run noise (default 0)")
    parser.add_argument("--list", action="store_true", help="list the configurations")
    parser.add_argument("--table", action="store_true", help="rewrite the table of docs/recipes.md from the JSON")
    args = parser.parse_args(argv)
    if args.list:
        for name, (lever, _) in configs.items():
            print(f"{name:<20} {lever}")
        return None
    record = None
    if not args.table:
        torch.set_num_threads(2)
        record = run_fn(args.name, args.minutes, args.heldout, args.evals, seed=args.seed)
    replace_block(block, table(json.loads(out.read_text()), configs), page(block))
    return record


def main(argv: list[str] | None = None) -> None:
    r = harness_main(argv, __doc__, CONFIGS, DEFAULT, run, OUT, "oracle")
    if r:
        print(f"oracle: pointing_f1={r['final']['pointing_f1']:.3f} counting_exact={r['final']['counting_exact']:.3f} "
              f"train_minutes={r['train_minutes']:.2f} heldout={r['heldout']}")


if __name__ == "__main__":
    main()
