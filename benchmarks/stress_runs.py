"""Runs that cannot mix (issue 23): randomized kill -9, concurrent starts and reruns of real commands.

Opt-in stress test of the run directory: ``contaudit audit``, ``contaudit screen`` (a suite of three
benchmarks) and ``contaudit calibrate`` (a tiny setting of its own) run as subprocesses of the installed
console script on tiny models built in code (``tests/planted.py``, ``tests/tiny_models.py``). Each
command has two variants writing the same ``--out``: the other variant swaps the suspect and clean
models (audit, screen) or takes another analysis seed (calibrate), so a run that kept the previous
variant's scores, models or audits reports numbers that are not its own. Each cycle picks a command,
a variant and one of:

* ``kill``: start the command (from a fresh run directory, or over the last finished run), SIGKILL it
  after a delay drawn uniformly over the command's fresh-run time (measured once, by the reference
  run), then rerun it to completion;
* ``concurrent``: start the same command twice at once on the same ``--out``: exactly one proceeds and
  the other fails at once with exit code 2 and one line "another contaudit command is writing this run
  directory"; the first must finish;
* ``rerun``: rerun the last finished command of that run directory (it reuses what is there).

Every finished run is compared with the uninterrupted reference run of the same command and variant
(made once, at the start, in ``OUT/reference/``): the normalized ``results.json`` (without ``created``,
``timing_s``, ``inputs`` and with the run folder's path replaced), a suite's verdicts, gate and each
benchmark's results, a calibration's ``runs``; and every ``results.json`` must name the protocol the
command was given (SHA-256) and the models it was given (fingerprints of ``design.models``).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/stress_runs.py --cycles 200 --seed 0 --out runs/stress

Prints a table (command x kind: cycles, identical to the reference, refused second starts, runs killed
while running, concurrent starts that did not overlap, reruns that redid work, mismatches, unexpected
exit codes) and the wall time, writes it to ``OUT/stress.json`` (with every defect: command line, kind,
delay, what differed) and exits 1 on any mismatch, unexpected exit code or rerun that redid work. Valid
exit codes: 0, the gate's 1/3/4 (the commands given ``--fail-on``; always the reference's code), 2 only
for the refused start, -9 for the killed run. It writes only under ``--out`` (``setup/``, ``reference/``,
``runs/``, ``logs/``, ``stress.json``) and never runs more than two contaudit processes at once. The
contaudit it tests is the one the console script imports: put a snapshot first on ``PYTHONPATH`` to test
a fixed commit while the working tree changes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

CONTAUDIT = Path(sys.executable).parent / "contaudit"
COMMANDS = ("audit", "screen", "calibrate")
KINDS = ("kill", "concurrent", "rerun")
VARIANTS = ("A", "B")
REFUSAL = "another contaudit command is writing this run directory"
MARKER = ".stress-runs"  # OUT was made by this script: its own subfolders may be replaced
OWN = ("setup", "reference", "runs", "logs", "stress.json")
VOLATILE = {"created", "timing_s", "inputs"}
POLL_S = 0.02
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

ANALYSIS = """
[probes]
suffix_words = 12
min_seen = 3
[analysis]
n_permutations = 199
n_bootstrap = 0
min_items = 10
min_probes = 3
"""


# ----------------------------------------------------------------------------- tiny setups


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _models(root: Path) -> dict[str, Path]:
    """Two tiny random GPT-2s, shared by the audit and the suite (the variants swap their roles)."""
    from tiny_models import save_tiny_model

    return {"m0": save_tiny_model(root / "m0", seed=0), "m1": save_tiny_model(root / "m1", seed=1)}


def _audit_setup(root: Path, models: dict[str, Path]) -> dict[str, Path]:
    """tests/test_audit.py's tiny protocol; B swaps suspect and clean and splits the sets at random."""
    from planted import make_planted

    root.mkdir(parents=True)
    planted = make_planted(root, n_items=140, n_docs=100)
    rows = [json.loads(line) for line in planted.bench.read_text().splitlines()]
    _write_jsonl(root / "test.jsonl", rows[0::2]), _write_jsonl(root / "shadow.jsonl", rows[1::2])
    protocols = {}
    for variant, (suspect, clean, origin) in {"A": ("m0", "m1", ""), "B": ("m1", "m0", 'shadow_origin = "random_split"\n')}.items():
        protocols[variant] = root / f"protocol-{variant}.toml"
        protocols[variant].write_text(
            f'name = "stress audit {variant}"\n[models.suspect]\npath = "{models[suspect]}"\n'
            f'[models.clean]\npath = "{models[clean]}"\n[sets]\n{origin}[sets.test]\npath = "test.jsonl"\n'
            f'[sets.shadow]\npath = "shadow.jsonl"\n[index]\ncorpus = ["{planted.corpus.name}"]\n{ANALYSIS}')
    return protocols


def _suite_setup(root: Path, models: dict[str, Path]) -> dict[str, Path]:
    """tests/test_suite_run.py's tiny suite: three benchmarks cut from one planted corpus (ids repeat)."""
    from planted import make_planted

    root.mkdir(parents=True)
    planted = make_planted(root, n_items=150, n_docs=100)
    rows = [json.loads(line) for line in planted.bench.read_text().splitlines()]
    benchmarks = ""
    for k, name in enumerate(("alpha", "beta", "gamma")):
        part = [{"id": f"q{i}", "text": r["text"]} for i, r in enumerate(rows[k::3])]
        _write_jsonl(root / f"{name}-test.jsonl", part[0::2]), _write_jsonl(root / f"{name}-shadow.jsonl", part[1::2])
        benchmarks += (f'\n[[benchmarks]]\nname = "{name}"\nshadow_origin = "random_split"\n[benchmarks.test]\n'
                       f'path = "{name}-test.jsonl"\n[benchmarks.shadow]\npath = "{name}-shadow.jsonl"\n')
    suites = {}
    for variant, (suspect, clean) in {"A": ("m0", "m1"), "B": ("m1", "m0")}.items():
        suites[variant] = root / f"suite-{variant}.toml"
        suites[variant].write_text(
            f'name = "stress suite {variant}"\n[models.suspect]\npath = "{models[suspect]}"\n[models.clean]\n'
            f'path = "{models[clean]}"\n[index]\ncorpus = ["corpus.jsonl"]\n{ANALYSIS}{benchmarks}')
    return suites


def _calibrate_setup(root: Path) -> dict[str, Path]:
    """tests/test_calibrate.py's own setting: planted corpus, test/shadow halves, a 1-layer pretrained base."""
    from dataclasses import replace

    from planted import make_planted

    from contaudit.finetune import ModelConfig, TrainConfig, pretrain

    root.mkdir(parents=True)
    planted = make_planted(root, n_items=40, n_docs=60, doc_words=200)
    rows = [json.loads(line) for line in planted.bench.read_text().splitlines()]
    _write_jsonl(root / "test.jsonl", rows[0::2]), _write_jsonl(root / "shadow.jsonl", rows[1::2])
    train = TrainConfig(steps=4, lr=5e-3, batch_size=4, seq_len=128, warmup_steps=1, eval_every=4, heldout_blocks=1,
                        threads=1, device="cpu", mixed_precision=False)
    pretrain(planted.corpus, root / "base", config=replace(train, steps=4),
             model_config=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=128, vocab_size=400,
                                      tokenizer_max_chars=200_000))
    protocols = {}
    for variant, seed in {"A": "", "B": "seed = 7\n"}.items():
        protocols[variant] = root / f"analysis-{variant}.toml"
        protocols[variant].write_text('[models.suspect]\npath = "x"\n[models.clean]\npath = "y"\n[sets.test]\n'
                                      f'path = "t"\n[sets.shadow]\npath = "s"\n{ANALYSIS}{seed}')
    return {"root": root, **protocols}


# ----------------------------------------------------------------------------- what a finished run says


def normalize(value, run: Path):
    """``value`` without volatile keys, the run folder's path replaced by ``<run>`` (so two folders compare)."""
    if isinstance(value, dict):
        return {k: normalize(v, run) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalize(v, run) for v in value]
    if isinstance(value, str):
        for prefix in (str(run.resolve()), str(run)):
            value = value.replace(prefix, "<run>")
    return value


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _model_identity(results: dict, where: str, expected: list[str]) -> list[str]:
    """Problems when ``results`` does not record exactly the models (fingerprints) of ``expected``."""
    recorded = [(m.get("role"), m.get("fingerprints")) for m in results["design"]["models"]]
    if [f for _, f in recorded] != [[fp] for fp in expected]:
        return [f"{where}: design.models {recorded} are not this command's models {expected}"]
    return []


def _protocol_identity(results: dict, where: str, sha: str) -> list[str]:
    got = results["protocol"].get("sha256")
    return [] if got == sha else [f"{where}: protocol sha256 {got} is not that of the protocol given ({sha})"]


@dataclass
class Command:
    """One command line of the stress test and how to read (and check) what it finished with."""

    name: str
    variant: str
    argv: list[str]  # without --out
    expected_models: list[str] = field(default_factory=list)  # fingerprints, in design.models order
    protocol: Path | None = None

    def line(self, out: Path) -> list[str]:
        return [str(CONTAUDIT), *self.argv, "--out", str(out)]

    def result(self, run: Path) -> tuple[dict, list[str]]:
        """(the normalized result to compare, problems of identity: another run's numbers)."""
        if self.name == "audit":
            results = _load(run / "results.json")
            problems = _protocol_identity(results, "results.json", _sha256(self.protocol))
            problems += _model_identity(results, "results.json", self.expected_models)
            return normalize(results, run), problems
        if self.name == "screen":
            suite = _load(run / "suite.json")
            sha = _sha256(self.protocol)
            problems = [] if suite["suite"].get("sha256") == sha else [f"suite.json: suite sha256 is not {sha}"]
            compared = {"benchmarks": normalize(suite["benchmarks"], run), "gate": normalize(suite["gate"], run)}
            for row in suite["benchmarks"]:
                results = _load(run / "benchmarks" / row["name"] / "results.json")
                where = f"benchmarks/{row['name']}/results.json"
                problems += _protocol_identity(results, where, sha) + _model_identity(results, where, self.expected_models)
                compared[row["name"]] = normalize(results, run)
            return compared, problems
        from contaudit.models import fingerprint

        calibration = _load(run / "calibration.json")
        problems = []
        for record in calibration["runs"]:
            name = f"k{record['k']}-seed{record['seed']}"
            audit = run / "audits" / name
            results = _load(audit / "results.json")
            where = f"audits/{name}/results.json"
            problems += _protocol_identity(results, where, _sha256(audit.with_suffix(".toml")))
            models = [run / "models" / name, run / "models" / f"clean-seed{record['seed']}-ref1"]
            problems += _model_identity(results, where, [fingerprint(m)["id"] for m in models])
            seed = results["protocol"].get("analysis", {}).get("seed")
            wanted = (7 if self.variant == "B" else 20240601) + record["seed"]
            if seed != wanted:
                problems.append(f"{where}: analysis seed {seed}, the protocol given says {wanted}")
        return {"runs": normalize(calibration["runs"], run)}, problems


def build_commands(setup: Path, commands: tuple[str, ...]) -> dict[tuple[str, str], Command]:
    """Write the tiny setups under ``setup`` (in this process: torch loads once) and the command lines."""
    from contaudit.models import fingerprint

    built: dict[tuple[str, str], Command] = {}
    models = _models(setup / "models") if {"audit", "screen"} & set(commands) else {}
    prints = {name: fingerprint(path)["id"] for name, path in models.items()}
    order = {"A": ["m0", "m1"], "B": ["m1", "m0"]}
    if "audit" in commands:
        for v, protocol in _audit_setup(setup / "audit", models).items():
            built["audit", v] = Command("audit", v, ["audit", str(protocol), "--fail-on", "CONTAMINATED"],
                                        [prints[m] for m in order[v]], protocol)
    if "screen" in commands:
        for v, suite in _suite_setup(setup / "screen", models).items():
            built["screen", v] = Command("screen", v, ["screen", str(suite), "--fail-on", "SUSPECT"],
                                         [prints[m] for m in order[v]], suite)
    if "calibrate" in commands:
        cal = _calibrate_setup(setup / "calibrate")
        root = cal["root"]
        for v in VARIANTS:
            built["calibrate", v] = Command("calibrate", v, [
                "calibrate", "--base", str(root / "base"), "--corpus", str(root / "corpus.jsonl"),
                "--test", str(root / "test.jsonl"), "--shadow", str(root / "shadow.jsonl"),
                "--shadow-origin", "random_split", "--dups", "0,1", "--seeds", "1", "--references", "1",
                "--steps", "12", "--lr", "5e-3", "--batch-size", "4", "--seq-len", "128", "--protocol", str(cal[v])])
    return built


# ----------------------------------------------------------------------------- processes


@dataclass
class Proc:
    popen: subprocess.Popen
    log: Path
    started: float
    ended: float | None = None

    @property
    def code(self) -> int | None:
        return self.popen.returncode

    @property
    def seconds(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    def poll(self) -> int | None:
        if self.ended is None and self.popen.poll() is not None:
            self.ended = time.perf_counter()
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start(argv: list[str], log: Path) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as f:
        popen = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=ENV)
    return Proc(popen, log, time.perf_counter())


def wait(*procs: Proc, until: float | None = None, watch: Path | None = None) -> list[str]:
    """Poll ``procs`` until all end (or ``until``); returns the lock file's contents seen meanwhile."""
    seen: list[str] = []
    while [p.poll() for p in procs].count(None) and (until is None or time.perf_counter() < until):
        if watch is not None:
            try:
                text = watch.read_text().strip()
            except OSError:
                text = ""
            if text and (not seen or seen[-1] != text):
                seen.append(text)
        time.sleep(POLL_S)
    return seen


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# ----------------------------------------------------------------------------- the stress test


@dataclass
class Counts:
    cycles: int = 0
    identical: int = 0
    refused: int = 0
    killed: int = 0  # killed while running (the rest of the kill cycles had finished before the delay)
    sequential: int = 0  # concurrent starts that did not overlap (the first had let go of the lock)
    not_reused: int = 0  # reruns of a finished run that redid work (a model trained, items scored, an index built)
    mismatches: int = 0
    unexpected: int = 0


class Stress:
    def __init__(self, out: Path, commands: dict[tuple[str, str], Command], rng: random.Random,
                 log=print) -> None:
        self.out, self.commands, self.rng, self.log = out, commands, rng, log
        self.reference: dict[tuple[str, str], tuple[int, dict]] = {}
        self.typical: dict[str, float] = {}
        self.finished: dict[str, str | None] = {}  # command -> variant last finished in its run directory
        self.counts: dict[tuple[str, str], Counts] = {}
        self.defects: list[dict] = []
        self.rerun_seconds: dict[str, list[float]] = {}
        self.refusal_seconds: list[float] = []
        self.orphans: list[str] = []

    # -- references

    def make_references(self) -> None:
        for (name, variant), cmd in self.commands.items():
            run = self.out / "reference" / f"{name}-{variant}"
            proc = start(cmd.line(run), self.out / "logs" / f"reference-{name}-{variant}.log")
            wait(proc)
            code = proc.code
            if not self._valid_finish(cmd, code):
                raise SystemExit(f"reference run of {name} {variant} exited {code}; see {proc.log}")
            result, problems = cmd.result(run)
            if problems:
                self._defect(name, "reference", variant, "identity", problems=problems, log=str(proc.log))
            self.reference[name, variant] = (code, result)
            self.typical[name] = self.typical.get(name, 0.0) + proc.seconds / len(VARIANTS)
            self.log(f"reference {name} {variant}: exit {code} in {proc.seconds:.1f} s")
        for name in {n for n, _ in self.commands}:
            self.finished[name] = None

    @staticmethod
    def _valid_finish(cmd: Command, code: int | None) -> bool:
        gated = "--fail-on" in cmd.argv
        return code == 0 or (gated and code in (1, 3, 4))

    # -- one cycle

    def cycle(self, i: int, total: int) -> None:
        name = self.rng.choice(sorted(self.finished))
        kind = self.rng.choice(KINDS)
        counts = self.counts.setdefault((name, kind), Counts())
        counts.cycles += 1
        run = self.out / "runs" / name
        logs = self.out / "logs" / f"cycle-{i:04d}-{name}-{kind}"
        if kind == "rerun":
            variant = self.finished[name]
            if variant is None:  # nothing finished there yet: finish one first
                variant = self.rng.choice(VARIANTS)
                self._finish(name, variant, run, logs.with_name(logs.name + "-first.log"), counts, i, kind,
                             count=False)
            detail = self._rerun(name, variant, run, logs, counts, i)
        else:
            variant = self.rng.choice(VARIANTS)
            fresh = self.finished[name] is None or self.rng.random() < 0.5
            if fresh and run.exists():
                shutil.rmtree(run)  # this script's own run directory
            start_state = "fresh" if fresh else f"over {self.finished[name]}"
            detail = (self._kill if kind == "kill" else self._concurrent)(name, variant, run, logs, counts, i)
            detail = f"{start_state}, {detail}"
        self.log(f"[{i}/{total}] {name} {kind} {variant}: {detail}")

    def _kill(self, name, variant, run, logs, counts, i) -> str:
        cmd = self.commands[name, variant]
        delay = self.rng.uniform(0.0, self.typical[name])
        proc = start(cmd.line(run), logs.with_name(logs.name + "-killed.log"))
        wait(proc, until=proc.started + delay)
        if proc.poll() is None:
            kids = children(proc.popen.pid)
            proc.popen.send_signal(signal.SIGKILL)
            wait(proc)
            counts.killed += 1
            left = [pid for pid in kids if alive(pid)]
            if left:
                self.orphans.append(f"cycle {i} {name}: children {left} of the killed {proc.popen.pid} still ran")
                time.sleep(2.0)
                for pid in left:
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)
            what = f"killed at {delay:.2f} s"
            self.finished[name] = None
            if proc.code != -signal.SIGKILL:
                counts.unexpected += 1
                self._defect(name, "kill", variant, "exit code", code=proc.code, delay=delay, log=str(proc.log))
        else:
            what = f"finished before the kill at {delay:.2f} s (exit {proc.code})"
            if self._check_finish(name, variant, run, proc, counts, i, "kill", delay=delay, count=False):
                self.finished[name] = variant
        rerun = self._finish(name, variant, run, logs.with_name(logs.name + "-rerun.log"), counts, i, "kill",
                             delay=delay)
        return f"{what}; rerun {rerun}"

    def _concurrent(self, name, variant, run, logs, counts, i) -> str:
        cmd = self.commands[name, variant]
        first = start(cmd.line(run), logs.with_name(logs.name + "-1.log"))
        second = start(cmd.line(run), logs.with_name(logs.name + "-2.log"))
        holders = wait(first, second, watch=run / ".contaudit.lock")
        procs = (first, second)
        refused = [p for p in procs if p.code == 2 and self._refusal_line(p.output())]
        proceeded = [p for p in procs if p not in refused]
        if len(refused) == 1 and self._valid_finish(cmd, proceeded[0].code):
            winner, loser = proceeded[0], refused[0]
            if loser.ended > winner.ended:
                counts.unexpected += 1
                self._defect(name, "concurrent", variant, "refused start ended after the run it waited for",
                             log=str(loser.log))
                return "refusal came after the winner finished"
            counts.refused += 1
            self.refusal_seconds.append(loser.seconds)
            self._check_finish(name, variant, run, winner, counts, i, "concurrent")
            self.finished[name] = variant
            return f"one refused in {loser.seconds:.1f} s, the other exit {winner.code} in {winner.seconds:.1f} s"
        if not refused and all(self._valid_finish(cmd, p.code) for p in procs):
            # Both ran: only correct if they held the lock one after the other (the first had let go).
            counts.sequential += 1
            self._check_finish(name, variant, run, first, counts, i, "concurrent")
            self.finished[name] = variant
            return (f"no overlap: both exit {first.code}/{second.code} ({first.seconds:.1f} s, {second.seconds:.1f} s; "
                    f"lock holders seen: {holders})")
        counts.unexpected += 1
        self._defect(name, "concurrent", variant, "exit codes", codes=[p.code for p in procs],
                     logs=[str(p.log) for p in procs], outputs=[p.output()[-2000:] for p in procs])
        self.finished[name] = None
        return f"UNEXPECTED exit codes {[p.code for p in procs]}"

    def _rerun(self, name, variant, run, logs, counts, i) -> str:
        log = logs.with_name(logs.name + ".log")
        detail = self._finish(name, variant, run, log, counts, i, "rerun", rerun=True)
        redone = not_reused(name, log.read_text(errors="replace"))
        if redone:
            counts.not_reused += 1
            self._defect(name, "rerun", variant, "not reused", cycle=i, redone=redone, log=str(log))
        return detail + (f"; NOT REUSED: {redone[:3]}" if redone else "")

    @staticmethod
    def _refusal_line(output: str) -> bool:
        lines = [line for line in output.splitlines() if line.strip()]
        return len(lines) == 1 and REFUSAL in lines[0]

    def _finish(self, name, variant, run, log, counts, i, kind, delay=None, rerun=False, count=True) -> str:
        """Run to completion and check the result; returns a short description."""
        proc = start(self.commands[name, variant].line(run), log)
        wait(proc)
        if rerun:
            self.rerun_seconds.setdefault(name, []).append(proc.seconds)
        ok = self._check_finish(name, variant, run, proc, counts, i, kind, delay=delay, count=count)
        self.finished[name] = variant if ok else None
        return f"exit {proc.code} in {proc.seconds:.1f} s{'' if ok else ' (PROBLEM)'}"

    def _check_finish(self, name, variant, run, proc, counts, i, kind, delay=None, count=True) -> bool:
        """Exit code as the reference's, result identical to it and naming its own protocol and models."""
        cmd = self.commands[name, variant]
        ref_code, ref_result = self.reference[name, variant]
        if proc.code != ref_code or not self._valid_finish(cmd, proc.code):
            counts.unexpected += 1
            self._defect(name, kind, variant, "exit code", cycle=i, code=proc.code, reference_code=ref_code,
                         delay=delay, log=str(proc.log), output=proc.output()[-2000:])
            return False
        try:
            result, problems = cmd.result(run)
        except (OSError, ValueError, KeyError) as e:
            result, problems = None, [f"cannot read the finished run: {type(e).__name__}: {e}"]
        differences = [] if result is None else diff(ref_result, result)
        if problems or differences:
            counts.mismatches += 1
            self._defect(name, kind, variant, "mismatch", cycle=i, delay=delay, problems=problems,
                         differences=differences[:20], log=str(proc.log))
            return False
        if count:
            counts.identical += 1
        return True

    def _defect(self, name, kind, variant, what, **details) -> None:
        record = {"command": name, "kind": kind, "variant": variant, "what": what,
                  "line": " ".join(self.commands[name, variant].line(self.out / "runs" / name)), **details}
        self.defects.append(record)
        self.log(f"  DEFECT {json.dumps(record, default=str)[:3000]}")


def not_reused(name: str, output: str) -> list[str]:
    """What a rerun of a finished run did again, from its log: models trained, items scored, indexes built."""
    if name == "calibrate":
        return [line.strip() for line in output.splitlines() if line.strip().startswith("trained ")]
    redone = [line.strip() for line in output.splitlines()
              if "index:" in line and "reusing" not in line and "MB of corpus" in line]
    for match in re.finditer(r"score: (\S+): (\d+) items \((\d+) cached\)", output):
        if match.group(2) != match.group(3):
            redone.append(match.group(0))
    return redone


def diff(a, b, where: str = "") -> list[str]:
    """Paths at which two JSON values differ (exactly: the same command must give the same numbers)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in the {'reference' if k in a else 'run'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += diff(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} entries in the reference, {len(b)} in the run"]
        return [d for k, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{where}[{k}]")]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return [] if same else [f"{where}: reference {a!r}, run {b!r}"]


def table(counts: dict[tuple[str, str], Counts]) -> str:
    cols = ("cycles", "identical", "refused", "killed", "sequential", "not_reused", "mismatches", "unexpected")
    lines = [f"{'command':<10} {'kind':<11} " + " ".join(f"{c:>10}" for c in cols)]
    for (name, kind), c in sorted(counts.items()):
        lines.append(f"{name:<10} {kind:<11} " + " ".join(f"{getattr(c, col):>10}" for col in cols))
    total = Counts(**{col: sum(getattr(c, col) for c in counts.values()) for col in cols})
    lines.append(f"{'total':<10} {'':<11} " + " ".join(f"{getattr(total, col):>10}" for col in cols))
    return "\n".join(lines)


def prepare_out(out: Path) -> None:
    """Make ``out`` ours: new, empty (but for a log), or made by an earlier stress run (its own parts replaced)."""
    if out.exists():
        entries = {p.name for p in out.iterdir()}
        if MARKER not in entries and entries - {"stress.log"}:
            raise SystemExit(f"{out} holds files this script did not write ({', '.join(sorted(entries)[:3])}); "
                             f"choose a new --out")
        for name in OWN:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by benchmarks/stress_runs.py; it replaces setup/, reference/, runs/, logs/\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/stress"))
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated: audit,screen,calibrate")
    args = parser.parse_args(argv)
    commands = tuple(c.strip() for c in args.commands.split(",") if c.strip())
    if not commands or set(commands) - set(COMMANDS):
        parser.error(f"--commands must name some of {', '.join(COMMANDS)}, got {args.commands!r}")
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    if not CONTAUDIT.exists():
        parser.error(f"no contaudit console script beside {sys.executable}")
    started = time.perf_counter()
    out = args.out.resolve()
    prepare_out(out)
    import contaudit

    print(f"contaudit from {Path(contaudit.__file__).parent}; setup in {out / 'setup'} ...", flush=True)
    built = build_commands(out / "setup", commands)
    stress = Stress(out, built, random.Random(args.seed), log=lambda line: print(line, flush=True))
    stress.make_references()
    setup_s = time.perf_counter() - started
    stress.log(f"setup and references: {setup_s:.0f} s; typical fresh run: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(stress.typical.items())))
    for i in range(1, args.cycles + 1):
        stress.cycle(i, args.cycles)
    wall = time.perf_counter() - started
    print()
    print(table(stress.counts))
    refusal = stress.refusal_seconds
    print(f"\n{args.cycles} cycles, seed {args.seed}, commands {','.join(commands)}: wall time {wall / 60:.1f} min "
          f"({setup_s:.0f} s setup and references)")
    if refusal:
        print(f"refused starts ended after {min(refusal):.1f}-{max(refusal):.1f} s (median "
              f"{sorted(refusal)[len(refusal) // 2]:.1f} s)")
    for name, seconds in sorted(stress.rerun_seconds.items()):
        print(f"{name}: reruns of a finished run {sorted(seconds)[len(seconds) // 2]:.1f} s median "
              f"(fresh run {stress.typical[name]:.1f} s)")
    for line in stress.orphans:
        print(f"orphan: {line}")
    bad = sum(c.mismatches + c.unexpected + c.not_reused for c in stress.counts.values())
    print(f"defects: {len(stress.defects)}" + ("" if not stress.defects else f" (see {out / 'stress.json'})"))
    (out / "stress.json").write_text(json.dumps({
        "command_line": " ".join([Path(sys.executable).name, *sys.argv]), "cycles": args.cycles, "seed": args.seed,
        "commands": list(commands), "contaudit": str(Path(contaudit.__file__).parent), "wall_s": round(wall, 1), "setup_and_references_s": round(setup_s, 1),
        "typical_fresh_run_s": {k: round(v, 2) for k, v in stress.typical.items()},
        "table": [{"command": n, "kind": k, **vars(c)} for (n, k), c in sorted(stress.counts.items())],
        "refusal_s": [round(s, 2) for s in refusal],
        "rerun_s": {k: [round(s, 2) for s in v] for k, v in stress.rerun_seconds.items()},
        "orphans": stress.orphans, "defects": stress.defects}, indent=2, default=str) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
