"""Data parallelism: several copies of one model score the batches of one run side by side.

``score(..., replicas=N)`` starts N *replicas*, each the model loaded on its own
devices: a process on this machine (on GPUs one GPU each, or one group of ``devices``
each when a model is split; on CPU each gets its share of the threads), or with
``ray`` a Ray actor on the cluster at ``RAY_ADDRESS`` (else on a local Ray instance)
that asks Ray for one GPU per device of a replica.

The driver (the process that called ``score``) does everything except the forward
passes: it tokenizes, plans the batches exactly as one process would (the same
length-sorted packing under the same token budget), hands whole batches to whichever
replica has room, joins windows into items, writes the cache and the output. Hence:

- **Results identical to one process.** Every batch is the batch one process runs,
  the same rows in the same order with the same padding, and a replica runs it with
  the same code. On CPU one process runs each batch on one thread (one single-threaded
  worker per core), and so does a replica (its share of the cores as single-threaded
  workers), so per-item numbers are bit for bit those of one process (tested). On GPUs
  of one model the kernels are those of one process for the same shapes. A model whose
  batches run on several intra-op threads (remote code on CPU) agrees to rounding.
- **One cache, one writer.** Only the driver writes: each finished item is appended
  and fsynced to the cache file one process uses, after every batch. No file ever has
  two writers, a run with replicas resumes a one-process run and the reverse, and
  replicas on other Ray nodes need no shared filesystem for the cache.
- **Resume after a kill.** When the driver dies, replicas find their task pipe closed
  and exit after the batch they are on (Ray ends the actors of a dead driver); the
  rerun takes finished items from the cache. A replica that dies ends the run with an
  error naming it, resumable the same way.

Each replica checks that the weight files it loads have the sizes the driver
fingerprinted (on a cluster every node must see the model at the same path, with
contaudit installed). ``ray`` is an optional extra (``pip install 'contaudit[ray]'``),
imported only when ``ray`` is set.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from importlib import metadata
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np
import torch

from contaudit.config import ScoreSettings
from contaudit.errors import ContauditError, InputError
from contaudit.models import (
    LoadedModel,
    ModelError,
    ModelSource,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_model,
)
from contaudit.progress import quiet_transformers
from contaudit.ray_support import RayConnection
from contaudit.scoring.batching import pack_batches
from contaudit.scoring.likelihood import Row
from contaudit.scoring.parallel import run_batches
from contaudit.scoring.runner import LocalRunner

DEPTH = 2  # batches queued per worker of a replica, so it never waits for the driver between batches
_STOP_SECONDS = 30  # how long a replica may take to exit after its last batch


class ReplicaError(ContauditError):
    """A replica failed: it died, or it disagrees with the others."""


# --- inside a replica -----------------------------------------------------------------


class ReplicaWorker:
    """One replica's model and the batches it runs (in a replica process or a Ray actor).

    ``spec``: ``model`` and ``gguf_file`` (as :func:`resolve_model` takes them), ``dtype``,
    ``trust_remote_code``, ``devices`` (this replica's own names: ``["cpu"]``,
    ``["cuda:0"]``, or several to split the model), ``threads`` (the setting's share,
    None when unset), ``available`` (this replica's share of the threads) and
    ``weights`` (``[name, size]`` of each weight file, as the driver saw them).
    """

    def __init__(self, spec: dict):
        quiet_transformers()
        source = resolve_model(spec["model"], spec["gguf_file"])
        seen = [[p.name, p.stat().st_size] for p in source.weight_files]
        if spec.get("weights") is not None and seen != [list(w) for w in spec["weights"]]:
            raise ModelError(f"this replica ({socket.gethostname()}) sees other weight files at the model path than "
                             f"the driver fingerprinted: {seen} instead of {spec['weights']}", path=source.display)
        devices = list(spec["devices"])
        loaded = load_model(source, device=devices[0], dtype=spec["dtype"], trust_remote_code=spec["trust_remote_code"],
                            devices=tuple(devices) if len(devices) > 1 else ())
        self.runner = LocalRunner(loaded, threads=spec["threads"], available=spec["available"])
        self.workers, self.intra_op = self.runner.workers, self.runner.intra_op
        self._one_at_a_time = threading.Lock()
        self.facts = {"device_type": loaded.device.type, "dtype": str(loaded.dtype).removeprefix("torch."),
                      "context_length": loaded.context_length, "transformers": metadata.version("transformers"),
                      "torch": torch.__version__, "node": socket.gethostname(), "pid": os.getpid(),
                      **{k: v for k, v in self.runner.facts.items() if k not in ("replicas",)}}

    def execute(self, task: tuple) -> tuple:
        """Run one batch planned by the driver: ``("likelihood", (rows, budget, pad_id))`` gives
        ``(stats per row, n scored)``, ``("complete", (prompts, n_new, budget, pad_id, max_positions))``
        gives ``(continuation per prompt, n generated)``.

        The budget is the one the driver packed with, so the rows form one batch here too,
        in the order given (checked): the batch one process would run.
        """
        kind, payload = task
        out, total, batches = None, 0, 0
        if kind == "likelihood":
            rows_data, budget, pad_id = payload
            rows = [Row(j, ids, first) for j, (ids, first) in enumerate(rows_data)]
            out = [None] * len(rows)
            for group, stats, n in self.runner.likelihood(rows, batch_tokens=budget, pad_id=pad_id, workers=1):
                for row, s in zip(group, stats):
                    out[row.key] = s
                total, batches = total + n, batches + 1
        elif kind == "complete":
            prompts, n_new, budget, pad_id, max_positions = payload
            out = [None] * len(prompts)
            for indices, continuations, n in self.runner.complete(prompts, n_new, batch_tokens=budget, pad_id=pad_id,
                                                                  max_positions=max_positions, workers=1):
                for i, c in zip(indices, continuations):
                    out[i] = c
                total, batches = total + n, batches + 1
        else:
            raise ValueError(f"unknown task {kind!r}")
        if batches != 1:
            raise RuntimeError(f"a planned batch ran as {batches} batches in a replica")
        return out, total

    def execute_locked(self, task: tuple) -> tuple:
        """:meth:`execute` from a Ray actor's threads: one batch at a time unless it has several workers."""
        torch.set_num_threads(self.intra_op)
        if self.workers > 1:
            return self.execute(task)
        with self._one_at_a_time:
            return self.execute(task)


def _error_message(e: BaseException) -> tuple[str, str]:
    if isinstance(e, ContauditError):
        return type(e).__name__, str(e)
    return type(e).__name__, f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"


def serve(task_fd: int, result_fd: int) -> None:
    """A replica process: receive the spec, load the model, run batches until the task pipe closes.

    Messages to the driver: ``("ready", facts)``, then ``("result", task id, result)``
    per batch, or ``("error", type name, message)``.
    """
    tasks_in, results_out = Connection(task_fd, writable=False), Connection(result_fd, readable=False)
    try:
        spec = tasks_in.recv()
        worker = ReplicaWorker(spec)
        results_out.send(("ready", worker.facts))
    except (EOFError, BrokenPipeError):
        return  # the driver is gone
    except BaseException as e:  # noqa: BLE001 - reported to the driver, which raises it
        with contextlib.suppress(OSError):
            results_out.send(("error", *_error_message(e)))
        return
    tasks: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            while True:
                tasks.put(tasks_in.recv())
        except (EOFError, OSError):
            pass
        finally:
            tasks.put(None)  # the driver closed the pipe, or died: finish what was taken, then exit

    threading.Thread(target=read, daemon=True, name="contaudit-replica-reader").start()
    torch.set_num_threads(worker.intra_op)
    try:
        for (task_id, _), result in run_batches(iter(tasks.get, None), lambda t: worker.execute(t[1]),
                                                workers=worker.workers):
            results_out.send(("result", task_id, result))
    except (BrokenPipeError, EOFError):
        return
    except BaseException as e:  # noqa: BLE001
        with contextlib.suppress(OSError):
            results_out.send(("error", *_error_message(e)))


# --- in the driver --------------------------------------------------------------------


def _raise_reported(k: int, label: str, name: str, message: str):
    if name in ("ModelError", "InputError") or name.endswith("InputError"):
        raise (ModelError if name == "ModelError" else InputError)(message)
    raise ReplicaError(f"replica {k} ({label}) failed: {message}")


class _Processes:
    """Replicas as processes on this machine, talking over two pipes each."""

    def __init__(self, specs: list[dict], envs: list[dict], labels: list[str]):
        self.labels, self.labels_used = labels, list(labels)
        self.procs, self.tasks, self.results = [], [], []
        out = _stderr_fd()
        for spec, env in zip(specs, envs):
            task_r, task_w = os.pipe()
            result_r, result_w = os.pipe()
            # os._exit: every message is already written (unbuffered); skip torch's slow interpreter teardown
            code = f"import os; from contaudit.scoring.replicas import serve; serve({task_r}, {result_w}); os._exit(0)"
            try:
                proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(task_r, result_w), env=env,
                                        stdin=subprocess.DEVNULL, stdout=out)
            finally:
                os.close(task_r)
                os.close(result_w)
            self.procs.append(proc)
            self.tasks.append(Connection(task_w, readable=False))
            self.results.append(Connection(result_r, writable=False))
            self.tasks[-1].send(spec)

    def ready(self) -> list[dict]:
        facts: dict[int, dict] = {}
        while len(facts) < len(self.procs):
            k, message = self._receive([k for k in range(len(self.procs)) if k not in facts])
            if message[0] != "ready":
                raise ReplicaError(f"replica {k} ({self.labels[k]}) sent {message[0]!r} before it was ready")
            facts[k] = message[1]
        return [facts[k] for k in range(len(self.procs))]

    def submit(self, k: int, task_id: int, task: tuple) -> None:
        try:
            self.tasks[k].send((task_id, task))
        except OSError:
            self._died(k)

    def wait_any(self, busy: list[int]) -> tuple[int, int, tuple]:
        k, message = self._receive(busy)
        if message[0] != "result":
            raise ReplicaError(f"replica {k} ({self.labels[k]}) sent {message[0]!r} instead of a result")
        return k, message[1], message[2]

    def _receive(self, among: list[int]) -> tuple[int, tuple]:
        conns = {self.results[k]: k for k in among}
        while True:
            ready = wait(list(conns), timeout=5.0)
            if not ready:
                for k in among:  # a replica stuck without closing its pipe would show here
                    if self.procs[k].poll() is not None:
                        self._died(k)
                continue
            k = conns[ready[0]]
            try:
                message = self.results[k].recv()
            except (EOFError, OSError):
                self._died(k)
            if message[0] == "error":
                _raise_reported(k, self.labels[k], message[1], message[2])
            return k, message

    def _died(self, k: int):
        try:
            code = self.procs[k].wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        how = "without exiting" if code is None else f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        raise ReplicaError(f"replica {k} ({self.labels[k]}, pid {self.procs[k].pid}) died ({how}); finished items "
                           "are in the cache: rerun to resume")

    def close(self, abort: bool) -> None:
        for conn in self.tasks:
            with contextlib.suppress(OSError):
                conn.close()  # end of tasks: each replica exits after its current batch
        for proc in self.procs:
            if abort:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in self.results:
            with contextlib.suppress(OSError):
                conn.close()


def _stderr_fd() -> int | None:
    """Where a replica's stray output goes: this process's stderr (never the pipes)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


class _RayActor:
    """A replica as a Ray actor (the class is wrapped with ``ray.remote`` when used)."""

    def __init__(self, spec: dict):
        self.worker, self.error = None, None
        try:
            self.worker = ReplicaWorker(spec)
        except BaseException as e:  # noqa: BLE001 - reported by facts(), raised by the driver
            self.error = _error_message(e)

    def facts(self) -> tuple:
        return ("error", *self.error) if self.error else ("ready", self.worker.facts)

    def execute(self, task: tuple) -> tuple:
        return self.worker.execute_locked(task)


class _RayActors:
    """Replicas as Ray actors: on the cluster at RAY_ADDRESS, or a local Ray instance started here."""

    def __init__(self, connection: RayConnection, specs: list[dict], resources: list[dict]):
        self.connection = connection
        # unless connected (to RAY_ADDRESS or before): a local instance, as large as needed
        ray = self.ray = connection.start_local(max(os.cpu_count() or 1, sum(r["num_cpus"] for r in resources)))
        self.labels = [f"Ray actor {k}" for k in range(len(specs))]
        self.labels_used: list[str] = []
        self.actors, self.refs = [], {}
        try:
            self._check_resources(resources)
            actor = ray.remote(_RayActor)
            self.actors = [actor.options(**r).remote(spec) for spec, r in zip(specs, resources)]
        except BaseException:
            self.close(abort=True)
            raise

    def _check_resources(self, resources: list[dict]) -> None:
        have = self.ray.cluster_resources()
        for name, key in (("CPU", "num_cpus"), ("GPU", "num_gpus")):
            want = sum(r[key] for r in resources)
            if want > have.get(name, 0):
                raise InputError(f"{len(resources)} Ray replicas need {want:g} {name}s in all and the Ray cluster "
                                 f"has {have.get(name, 0):g}; use fewer replicas or threads")

    def ready(self) -> list[dict]:
        facts = []
        for k, actor in enumerate(self.actors):
            message = self._get(k, actor.facts.remote())
            if message[0] == "error":
                _raise_reported(k, self.labels[k], message[1], message[2])
            facts.append(message[1])
            self.labels[k] = f"Ray actor {k} on {message[1]['node']}"
        self.labels_used = [f"{'+'.join(f['devices_used'])}@{f['node']}" for f in facts]
        return facts

    def submit(self, k: int, task_id: int, task: tuple) -> None:
        self.refs[self.actors[k].execute.remote(task)] = (k, task_id)

    def wait_any(self, busy: list[int]) -> tuple[int, int, tuple]:
        done, _ = self.ray.wait(list(self.refs), num_returns=1)
        k, task_id = self.refs.pop(done[0])
        return k, task_id, self._get(k, done[0])

    def _get(self, k: int, ref):
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, ContauditError):
                raise cause from None
            name, message = _error_message(cause) if cause is not None else ("RayTaskError", str(e).splitlines()[0])
            raise ReplicaError(f"replica {k} ({self.labels[k]}) failed: {message}") from None
        except ray.exceptions.RayActorError as e:
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise ReplicaError(f"replica {k} ({self.labels[k]}) died ({first[:300]}); finished items are in the "
                               "cache: rerun to resume") from None

    def close(self, abort: bool) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        self.actors, self.refs = [], {}
        self.connection.close()


class ReplicaPool:
    """The batches of one run on several replicas, behind :class:`~contaudit.scoring.runner.LocalRunner`'s
    interface: ``likelihood`` and ``complete`` yield each batch when a replica returns it."""

    def __init__(self, backend, facts: list[dict], depths: list[int]):
        self.backend, self.depths = backend, depths
        self.broken = False

        def same(key):
            values = [f[key] for f in facts]
            return values[0] if all(v == values[0] for v in values) else values

        self.facts = {"head_on_scored_positions_only": all(f["head_on_scored_positions_only"] for f in facts),
                      "cpu_workers": same("cpu_workers"), "threads_per_worker": same("threads_per_worker"),
                      "replicas": len(facts), "devices_used": list(backend.labels_used),
                      "transformers": facts[0]["transformers"]}

    def likelihood(self, rows: list[Row], *, batch_tokens: int, pad_id: int
                   ) -> Iterator[tuple[list[Row], list[np.ndarray], int]]:
        batches = pack_batches([len(r.ids) for r in rows], batch_tokens)

        def task(t: int) -> tuple:
            return "likelihood", ([(rows[i].ids, rows[i].first_target) for i in batches[t]], batch_tokens, pad_id)

        for t, (stats, n) in self._run(len(batches), task):
            yield [rows[i] for i in batches[t]], stats, n

    def complete(self, prompts: list[list[int]], n_new: list[int], *, batch_tokens: int, pad_id: int,
                 max_positions: int | None) -> Iterator[tuple[list[int], list[list[int]], int]]:
        batches = pack_batches([len(p) + n for p, n in zip(prompts, n_new)], batch_tokens)

        def task(t: int) -> tuple:
            b = batches[t]
            return "complete", ([prompts[i] for i in b], [n_new[i] for i in b], batch_tokens, pad_id, max_positions)

        for t, (continuations, n) in self._run(len(batches), task):
            yield batches[t], continuations, n

    def _run(self, n_tasks: int, make_task: Callable[[int], tuple]) -> Iterator[tuple[int, tuple]]:
        """Hand tasks out longest first, ``depth`` at a time per replica; yield ``(task, result)`` as they finish."""
        if self.broken:
            raise ReplicaError("the replicas still hold batches of an interrupted pass; start a new run")
        in_flight = [0] * len(self.depths)
        next_task = outstanding = 0
        self.broken = True  # until every task handed out has come back
        while next_task < n_tasks or outstanding:
            progressed = True
            while progressed and next_task < n_tasks:  # one task per replica with room, round and round
                progressed = False
                for k, depth in enumerate(self.depths):
                    if next_task < n_tasks and in_flight[k] < depth:
                        self.backend.submit(k, next_task, make_task(next_task))
                        in_flight[k] += 1
                        next_task += 1
                        outstanding += 1
                        progressed = True
            k, t, result = self.backend.wait_any([k for k, n in enumerate(in_flight) if n])
            in_flight[k] -= 1
            outstanding -= 1
            yield t, result
        self.broken = False


def _local_groups(settings: ScoreSettings) -> tuple[str, list[list[str]]]:
    """``(device kind, devices of each replica)`` on this machine, checked against what torch sees."""
    n = settings.replicas
    if settings.devices:
        names = list(settings.devices)
        for name in names:
            if name != "cpu":
                resolve_device(name)
        size = len(names) // n
        return ("cpu" if names[0] == "cpu" else "cuda"), [names[k * size:(k + 1) * size] for k in range(n)]
    device = resolve_device(settings.device)
    if device.type == "cpu":
        cores = os.cpu_count() or 1
        if n > cores:  # more copies than cores: each waits for a core, n times the memory (64 on 2 cores: 100x slower)
            raise InputError(f"`replicas` = {n} CPU replicas on a machine with {cores} cores: each replica is a "
                             f"model copy that needs a core of its own; use at most {cores}")
        return "cpu", [["cpu"] for _ in range(n)]
    if settings.device.startswith("cuda:") and n > 1:
        raise InputError(f"`device` {settings.device!r} is one GPU; give the GPUs of {n} replicas with `devices` "
                         "(e.g. cuda:0,cuda:1), or device 'cuda' for the first ones")
    count = torch.cuda.device_count()
    if count < n:
        raise InputError(f"{n} replicas need {n} GPUs (one each) and torch sees {count}; use fewer replicas, or "
                         "`devices` to choose GPUs")
    return "cuda", [[f"cuda:{k}"] for k in range(n)]


def _thread_shares(settings: ScoreSettings, n: int) -> list[int]:
    total = settings.threads or torch.get_num_threads()
    return [max(1, total // n + (1 if k < total % n else 0)) for k in range(n)]


def _base_spec(source: ModelSource, settings: ScoreSettings, expected_weights: list | None) -> dict:
    weights = [[w["name"], w["size"]] for w in expected_weights] if expected_weights is not None else None
    return {"model": source.display, "gguf_file": source.gguf_file, "dtype": settings.dtype,
            "trust_remote_code": settings.trust_remote_code, "weights": weights}


def process_plan(source: ModelSource, settings: ScoreSettings, expected_weights: list | None = None
                 ) -> tuple[list[dict], list[dict], list[str]]:
    """``(spec, environment, label)`` of each replica process on this machine.

    A GPU replica's process sees only its own GPUs (``CUDA_VISIBLE_DEVICES``, taken
    from this process's own when it has one), named ``cuda:0``, ``cuda:1``, ... inside;
    a CPU replica sees none and gets its share of the threads.
    """
    kind, groups = _local_groups(settings)
    shares = _thread_shares(settings, len(groups)) if kind == "cpu" else [torch.get_num_threads()] * len(groups)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [v.strip() for v in visible.split(",")] if visible else [str(k) for k in range(torch.cuda.device_count())]
    package_root = str(Path(__file__).resolve().parents[2])
    specs, envs, labels = [], [], []
    for group, share in zip(groups, shares):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(share), "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        if kind == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[torch.device(d).index] for d in group)
            own = [f"cuda:{i}" for i in range(len(group))]
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
            own = group
        specs.append({**_base_spec(source, settings, expected_weights), "devices": own,
                      "threads": share if settings.threads else None, "available": share})
        envs.append(env)
        labels.append("+".join(group))
    return specs, envs, labels


def ray_plan(source: ModelSource, settings: ScoreSettings, expected_weights: list | None = None,
             cluster: dict | None = None) -> tuple[list[dict], list[dict]]:
    """``(spec, Ray actor options)`` of each replica: ``num_gpus`` = GPUs per replica (the
    length of a group of ``devices``, else 1), or on CPU ``num_cpus`` = its threads.

    ``cluster`` holds the Ray cluster's resources when connected (``device`` ``auto``
    then means GPUs if the cluster has any), else None (this machine decides).
    """
    n = settings.replicas
    per = len(settings.devices) // n if settings.devices else 1
    if settings.devices:
        kind = "cpu" if settings.devices[0] == "cpu" else "cuda"
    elif settings.device == "auto":
        has_gpu = cluster.get("GPU", 0) >= 1 if cluster is not None else torch.cuda.is_available()
        kind = "cuda" if has_gpu else "cpu"
    else:
        kind = "cpu" if settings.device == "cpu" else "cuda"
    if kind == "cpu":
        if settings.threads:
            shares = _thread_shares(settings, n)
        else:
            cpus = int(cluster.get("CPU", 0)) if cluster is not None else torch.get_num_threads()
            shares = [max(1, cpus // n)] * n
        options = [{"num_cpus": s, "num_gpus": 0, "max_concurrency": s} for s in shares]
        devices = [["cpu"] * per] * n
    else:
        shares = [1] * n
        options = [{"num_cpus": 1, "num_gpus": per, "max_concurrency": 1}] * n
        devices = [[f"cuda:{i}" for i in range(per)]] * n  # the actor's own GPUs: Ray sets CUDA_VISIBLE_DEVICES
    specs = [{**_base_spec(source, settings, expected_weights), "devices": d,
              "threads": s if settings.threads else None, "available": s} for d, s in zip(devices, shares)]
    return specs, options


def _ray_backend(source: ModelSource, settings: ScoreSettings, expected_weights: list | None) -> _RayActors:
    """Actors on the Ray instance this process is connected to, else the cluster at RAY_ADDRESS, else a
    local instance; disconnects on close only from what it connected to (:class:`RayConnection`)."""
    connection = RayConnection()
    try:
        return _RayActors(connection, *ray_plan(source, settings, expected_weights, connection.cluster_resources()))
    except BaseException:
        connection.close()
        raise


@contextlib.contextmanager
def start_replicas(source: ModelSource, settings: ScoreSettings, *, expected_weights: list | None = None
                   ) -> Iterator[tuple[LoadedModel, ReplicaPool]]:
    """Start ``settings.replicas`` replicas of ``source``; yield ``(loaded, pool)``; stop them.

    ``loaded`` has the tokenizer (loaded here while the replicas load the model) and
    the device type, dtype and context length the replicas report, but no model. The
    replicas are stopped on the way out; after an error or an interruption at once.
    """
    backend = _ray_backend(source, settings, expected_weights) if settings.ray else \
        _Processes(*process_plan(source, settings, expected_weights))
    finished = False
    try:
        tokenizer = load_tokenizer(source, trust_remote_code=settings.trust_remote_code)
        facts = backend.ready()
        for key in ("device_type", "dtype", "context_length", "transformers", "torch"):
            values = [f[key] for f in facts]
            if any(v != values[0] for v in values):
                raise ReplicaError(f"the replicas differ in {key}: {values}; scores would depend on the replica")
        depths = [DEPTH * f["cpu_workers"] for f in facts]
        pool = ReplicaPool(backend, facts, depths)
        context_token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        loaded = LoadedModel(None, tokenizer, source, torch.device(facts[0]["device_type"]),
                             getattr(torch, facts[0]["dtype"]), context_token, facts[0]["context_length"])
        yield loaded, pool
        finished = True
    finally:
        backend.close(abort=not finished)
