"""Probe models with known contamination: ``pretrain`` from scratch and ``finetune`` with injection.

``finetune`` trains a base causal LM on a filler corpus into which chosen benchmark
items are injected ``dup`` times at random positions of the token stream, and writes
the model with ``injection.json``, the ground truth of what went in. ``dup = 0`` is the
matched clean control. Modules: ``config`` (settings, :class:`DemoTrainingConfig`),
``stream`` (the training stream), ``train`` (the loop: LoRA, L2-SP, layer-wise
learning rates, early stopping), ``scratch`` (tokenizer and small GPT-2 for from-scratch runs), ``api``
(the two entry points). Base models are loaded and fingerprinted by :mod:`contaudit.models`,
the same code that loads models for scoring.

Example::

    from contaudit.finetune import DemoTrainingConfig, finetune, pretrain
    demo = DemoTrainingConfig()
    pretrain("corpus.jsonl", "models/base", config=demo.pretrain, model_config=demo.model)
    finetune("corpus.jsonl", "models/suspect", base="models/base", inject="test.jsonl", dup=demo.dup,
             config=demo.finetune)
"""

from contaudit.finetune.config import CorpusReading, DemoTrainingConfig, ItemSelection, ModelConfig, TrainConfig

_LAZY = {"finetune": "api", "pretrain": "api", "FinetuneResult": "api", "StepInfo": "train"}

__all__ = ["CorpusReading", "DemoTrainingConfig", "ItemSelection", "ModelConfig", "TrainConfig", *_LAZY]


def __getattr__(name: str):
    # torch and transformers load on first use, so `import contaudit.finetune` stays cheap
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"contaudit.finetune.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'contaudit.finetune' has no attribute {name!r}")
