"""A plain TRL SFT script, the benchmark's reference: what a user writes without trainyard.

    python trl_sft.py CONFIG.json    (prints one JSON line: tokens, runtime, loss)

TRL's defaults except what both sides must share (data, model, LoRA, batch, max_length,
lr, seed) and the options a case turns on (gradient_checkpointing, train_sampling_strategy).
Standalone on purpose: imports only datasets / peft / trl / transformers.
"""

import json
import sys
import time

start = time.perf_counter()
from datasets import load_dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402


def main(path: str) -> None:
    with open(path) as f:
        cfg = json.load(f)
    ds = load_dataset("json", data_files=cfg["data"], split="train")
    args = SFTConfig(output_dir=cfg["output_dir"], report_to="none", include_num_input_tokens_seen="non_padding",
                     use_cpu=cfg.get("use_cpu", True), **cfg["args"])
    lora = LoraConfig(task_type="CAUSAL_LM", **cfg["lora"])
    trainer = SFTTrainer(model=cfg["model"], args=args, train_dataset=ds, peft_config=lora)
    result = trainer.train()
    print(json.dumps({
        "tokens": trainer.state.num_input_tokens_seen,
        "train_runtime": result.metrics["train_runtime"],
        "train_loss": result.metrics["train_loss"],
        "steps": trainer.state.global_step,
        "in_process_s": time.perf_counter() - start,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
