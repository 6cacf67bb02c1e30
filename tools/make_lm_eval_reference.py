"""Writes tests/data/lm_eval_reference.json: lm-evaluation-harness's document-level perplexity
numbers for the tiny model on tests/data/ppl_docs.jsonl, which tests/test_perplexity.py
compares ours against (without needing lm-eval installed).

Run from the repo root (needs the `harness` extra: pip install -e '.[harness]'):
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python tools/make_lm_eval_reference.py

Two models: the tiny model as built, and a copy whose final norm weight is scaled so its
logits are 10x larger. The built model is near-uniform (loss ~ ln 1024), so it checks token
counts but barely notices which context a window sees; the sharpened copy does.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = "tests/data/ppl_docs.jsonl"
TASK_DIR = "tests/data/lm_eval_task"
TASK = "trainyard_ppl_docs"
OUT = ROOT / "tests/data/lm_eval_reference.json"
MAX_LENGTH = 128
LOGIT_SCALES = {"tiny": 1.0, "tiny_sharp": 10.0}
COMMAND = (
    "lm_eval --model hf --model_args pretrained={model},dtype=float32,max_length={max_length} "
    "--tasks {task} --include_path {task_dir} --device cpu --batch_size 1 "
    "--log_samples --output_path {out}"
)


def fingerprint(model, tokenizer, texts: list[str]) -> dict[str, str]:
    """Hashes of the weights and of the texts' token ids: the reference holds only for these."""
    import torch

    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return {
        "weights_sha256": weights.hexdigest(),
        "token_ids_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
    }


def scaled_model(model_dir: Path, scale: float):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(scale)  # logits are linear in the final norm's weight
    return model


def run_harness(model_dir: Path, workdir: Path) -> tuple[dict, list[dict]]:
    cmd = COMMAND.format(model=model_dir, max_length=MAX_LENGTH, task=TASK, task_dir=TASK_DIR, out=workdir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    args = [sys.executable, "-m", "lm_eval", *cmd.split()[1:]]
    subprocess.run(args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    results = json.loads(Path(glob.glob(f"{workdir}/**/results_*.json", recursive=True)[0]).read_text())
    samples_file = glob.glob(f"{workdir}/**/samples_{TASK}_*.jsonl", recursive=True)[0]
    lines = Path(samples_file).read_text().splitlines()
    samples = sorted((json.loads(line) for line in lines), key=lambda s: s["doc_id"])
    return results["results"][TASK], samples


def main() -> None:
    from transformers import AutoTokenizer

    from trainyard.evaluation.texts import load_texts
    from trainyard.fixtures.tiny_model import TINY_VERSION, ensure_tiny_model

    tiny = ensure_tiny_model()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    texts = load_texts(ROOT / DATA)
    reference = {
        "about": "lm-evaluation-harness loglikelihood_rolling numbers; regenerate with tools/make_lm_eval_reference.py",
        "lm_eval_version": version("lm-eval"),
        "transformers_version": version("transformers"),
        "torch_version": version("torch"),
        "command": COMMAND.format(model="<MODEL_DIR>", max_length=MAX_LENGTH, task=TASK, task_dir=TASK_DIR, out="<TMP>"),
        "data": DATA,
        "max_length": MAX_LENGTH,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, scale in LOGIT_SCALES.items():
            model_dir = Path(tmp) / name
            model = scaled_model(tiny, scale)
            model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
            metrics, samples = run_harness(model_dir, Path(tmp) / f"out-{name}")
            if [s["doc"]["text"] for s in samples] != texts:
                raise SystemExit("the harness read different documents than load_texts; check the task YAML")
            reference["models"][name] = {
                "model": f"{TINY_VERSION} (trainyard.fixtures.tiny_model), final norm weight x{scale}",
                "logit_scale": scale,
                **fingerprint(model, tokenizer, texts),
                "bits_per_byte": metrics["bits_per_byte,none"],
                "byte_perplexity": metrics["byte_perplexity,none"],
                "word_perplexity": metrics["word_perplexity,none"],
                "docs": [
                    {
                        "loglikelihood": float(s["filtered_resps"][0]),
                        "words": s["word_perplexity"][1],
                        "bytes": s["bits_per_byte"][1],
                    }
                    for s in samples
                ],
            }
            print(f"{name}: bits_per_byte {metrics['bits_per_byte,none']:.6f}, word_perplexity {metrics['word_perplexity,none']:.6g}")
    OUT.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
