"""Batching of SFT / DPO: packing keeps examples apart, length grouping cuts padding.

Real TRL trainers on the tiny model and the bundled fixtures; no training run: the batches
the trainer would train on are built and scored directly.
"""

from __future__ import annotations

import pytest

from trainyard.data.loading import load_examples
from trainyard.recipes.batching import (
    LENGTH_COLUMN,
    PackedRowsCollator,
    batching_kwargs,
    configure_packing,
    count_padding,
    enable_length_grouping,
    sft_packing_kwargs,
)
from trainyard.spec import DataSpec, RunSpec


def _sft_spec(**train) -> RunSpec:
    return RunSpec.model_validate({
        "name": "t", "matrix": "m", "recipe": "sft", "model": {"name": "x"},
        "data": {"source": "fixture:strandset_rust", "format": "strandset_rust", "eval_size": 0},
        "train": {"batch_size": 4, "max_length": 1024, **train},
    })


def _sft_trainer(tmp_path, tiny_model, spec: RunSpec, limit: int = 48):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    ds, _, _ = load_examples(DataSpec(source="fixture:strandset_rust", format="strandset_rust", eval_size=0, limit=limit))
    args = SFTConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=spec.train.batch_size, max_length=spec.train.max_length,
        use_cpu=True, report_to="none", gradient_checkpointing=False, completion_only_loss=True, seed=0,
        **batching_kwargs(spec), **sft_packing_kwargs(spec.train.packing),
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(tiny_model))
    return trainer


def _example_nll(model, ids: list[int], labels: list[int]) -> tuple[float, int]:
    """Summed NLL and target count of one example scored alone (the reference)."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, :-1].double()
    target = torch.tensor(labels[1:])
    keep = target != -100
    nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
    return float(nll), int(keep.sum())


def test_packed_rows_score_every_example_as_if_it_were_alone(tmp_path, tiny_model):
    """bfd packing on SDPA: the trainer's own loss on a packed batch equals the token-weighted
    loss of its examples each scored on its own (no attention across examples, positions
    reset, no label predicted from the previous example)."""
    import torch

    spec = _sft_spec(packing=True)
    trainer = _sft_trainer(tmp_path, tiny_model, spec)
    configure_packing(trainer)
    assert isinstance(trainer.data_collator, PackedRowsCollator)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == spec.train.batch_size
    model = trainer.model.eval()
    with torch.no_grad():
        loss = float(trainer.compute_loss(model, dict(batch)))

    total, count, examples = 0.0, 0, 0
    for row_ids, row_labels, row_pos in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["position_ids"].tolist(), strict=True):
        starts = [i for i, p in enumerate(row_pos) if p == 0] + [len(row_pos)]
        for a, b in zip(starts, starts[1:], strict=False):
            if all(lbl == -100 for lbl in row_labels[a:b]):
                continue  # padding at the end of a row
            nll, n = _example_nll(model, row_ids[a:b], row_labels[a:b])
            total, count, examples = total + nll, count + n, examples + 1
    assert examples > spec.train.batch_size  # rows really hold several examples
    assert loss == pytest.approx(total / count, rel=1e-5)


def test_length_grouping_cuts_padding_and_keeps_every_example(tmp_path, tiny_model):
    def padding(spec):
        trainer = _sft_trainer(tmp_path, tiny_model, spec)
        if spec.train.group_by_length:
            enable_length_grouping(trainer)
            assert LENGTH_COLUMN in trainer.train_dataset.column_names
        counter = count_padding(trainer)
        seen = sum(int(b["labels"].ne(-100).sum()) for b in trainer.get_train_dataloader())
        return counter.fraction, seen

    grouped, grouped_seen = padding(_sft_spec(group_by_length=True))
    plain, plain_seen = padding(_sft_spec(group_by_length=False))
    assert grouped_seen == plain_seen  # the same target tokens, in other batches
    assert 0 <= grouped < plain


def test_packing_never_uses_wrapped_and_grouping_is_off_when_packing():
    assert sft_packing_kwargs(True) == {"packing": True, "packing_strategy": "bfd"}
    assert batching_kwargs(_sft_spec(packing=True)) == {}
    assert batching_kwargs(_sft_spec())["train_sampling_strategy"] == "group_by_length"


def test_dpo_pairs_are_grouped_by_their_longer_answer(tmp_path, tiny_model):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{"prompt": "q " * (3 + i % 7), "chosen": "a " * (1 + (i * 5) % 40), "rejected": "b " * (2 + (i * 3) % 30)} for i in range(32)]
    spec = RunSpec.model_validate({"name": "t", "matrix": "m", "recipe": "dpo", "model": {"name": "x"}, "dpo": {},
                                   "data": {"source": "fixture:tatqa", "format": "tatqa_preference"}, "train": {"batch_size": 4}})
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True, report_to="none", max_length=128, **batching_kwargs(spec))
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    enable_length_grouping(trainer)
    row = trainer.train_dataset[0]
    assert row[LENGTH_COLUMN] == len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))
    counter = count_padding(trainer)
    batches = list(trainer.get_train_dataloader())
    assert sum(b["input_ids"].shape[0] for b in batches) == 2 * len(rows)  # chosen + rejected rows
    assert counter.fraction is not None and 0 <= counter.fraction < 1


@pytest.mark.parametrize("packing", [False, True])
def test_token_weighted_eval_loss_equals_each_example_scored_alone(tmp_path, tiny_model, packing):
    """The SFT recipe's final eval (sorted token-budget batches, logits only at targets) is
    the float64 token-weighted loss of every example, packed or not."""
    import math

    from trainyard.evaluation.trainer_eval import token_weighted_loss

    spec = _sft_spec(packing=packing)
    trainer = _sft_trainer(tmp_path, tiny_model, spec, limit=24)
    trainer.eval_dataset = {"heldout": trainer.train_dataset}
    if packing:
        configure_packing(trainer)
    else:
        enable_length_grouping(trainer)
    trainer.args.per_device_eval_batch_size = 3
    model = trainer.model.eval()
    got = token_weighted_loss(trainer, trainer.eval_dataset["heldout"])

    total, count = [], 0
    for row in trainer.eval_dataset["heldout"]:
        starts = [0]
        if packing:
            for n in row["seq_lengths"][:-1]:
                starts.append(starts[-1] + n)
        for a, b in zip(starts, [*starts[1:], len(row["input_ids"])], strict=True):
            nll, n = _example_nll(model, row["input_ids"][a:b], row["labels"][a:b])
            total.append(nll)
            count += n
    assert got.tokens == count
    assert got.loss == pytest.approx(math.fsum(total) / count, rel=1e-6)
