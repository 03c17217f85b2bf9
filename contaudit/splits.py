"""Random test/shadow splits that contaudit makes itself, and their verification.

Only a random split makes the test and shadow sets exchangeable, and only a split whose
randomness can be checked deserves the exact item-level tests. A ``[sets.random_split]``
names one benchmark file, a seed and a test fraction; :func:`split_test_shadow` makes the
split, and :func:`verify_random_split` re-derives it at analysis from the same file and
refuses score files whose test or shadow items are not the ones it gives.
"""

from __future__ import annotations

import hashlib

import numpy as np

from contaudit.errors import InputError
from contaudit.io import Item, load_items


def split_test_shadow(items: list[Item], *, seed: int = 0, test_fraction: float = 0.5) -> tuple[list[Item], list[Item]]:
    """Split items at random (seeded) into a test set and a shadow set.

    ``round(test_fraction * len(items))`` items go to the test set. Both halves keep
    the input order, so the split depends only on ``seed`` and the item ids' order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"`test_fraction` must be between 0 and 1 (exclusive), got {test_fraction}")
    n_test = round(test_fraction * len(items))
    if n_test == 0 or n_test == len(items):
        raise InputError(f"splitting {len(items)} items with test_fraction={test_fraction} leaves one half empty")
    chosen = set(np.random.default_rng(seed).permutation(len(items))[:n_test].tolist())
    test = [it for i, it in enumerate(items) if i in chosen]
    shadow = [it for i, it in enumerate(items) if i not in chosen]
    return test, shadow


def text_key(text: str) -> str:
    """What makes two item texts the same text: equal after collapsing whitespace (case and
    punctuation kept: HumanEval/56 and /61 differ only in their brackets)."""
    return " ".join(text.split())


def unique_texts(items: list[Item]) -> list[Item]:
    """``items`` without those whose text (:func:`text_key`) repeats an earlier one."""
    seen: set[str] = set()
    out = []
    for it in items:
        key = text_key(it.text)
        if key not in seen:
            seen.add(key)
            out.append(it)
    return out


def random_split_items(spec) -> tuple[list[Item], list[Item]]:
    """The test and shadow items of a ``[sets.random_split]`` (:class:`contaudit.protocol.RandomSplitSpec`).

    Items whose text repeats an earlier one (:func:`unique_texts`) are left out *before*
    the split: dropping them after it (test first) would put texts with many copies in the
    test set more often than half the time, and the sets would no longer be exchangeable.
    """
    items = load_items(spec.path, text_field=None if spec.template else spec.text_field, template=spec.template,
                       id_field=spec.id_field)
    return split_test_shadow(unique_texts(items), seed=spec.seed, test_fraction=spec.test_fraction)


def _ids_sha256(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


def split_record(spec, test: list[Item], shadow: list[Item]) -> dict:
    """What identifies a random split: the file (with its SHA-256), seed, fraction and both id sets' hashes."""
    from contaudit.manifest import describe_path

    return {"method": "random (contaudit)", "input": describe_path(spec.path), "seed": spec.seed,
            "test_fraction": spec.test_fraction, "n_test": len(test), "n_shadow": len(shadow),
            "test_ids_sha256": _ids_sha256([it.id for it in test]),
            "shadow_ids_sha256": _ids_sha256([it.id for it in shadow])}


def verify_random_split(spec, test_ids: list[str], shadow_ids: list[str]) -> dict:
    """Re-derive the split of ``spec`` and check the analysed sets come from it.

    Every analysed test id must be a test item of the split and every shadow id a shadow
    item (items may be missing: texts repeated under other ids are left out of the sets).
    Returns :func:`split_record` plus ``verified: True``; raises
    :class:`~contaudit.errors.InputError` naming an item that does not fit.
    """
    test, shadow = random_split_items(spec)
    derived = {"test": {it.id for it in test}, "shadow": {it.id for it in shadow}}
    for name, ids in (("test", test_ids), ("shadow", shadow_ids)):
        stray = [i for i in ids if i not in derived[name]]
        if stray:
            other = "shadow" if name == "test" else "test"
            where = (f"a {other} item of that split" if stray[0] in derived[other] else "not an item of that file")
            raise InputError(f"the {name} scores are not the random split contaudit makes from {spec.path} with seed "
                             f"{spec.seed} and test_fraction {spec.test_fraction}: {len(stray)} {name} items do not "
                             f"belong (e.g. {stray[0]!r}, {where}); rescore the sets the audit wrote")
    return {**split_record(spec, test, shadow), "verified": True}
