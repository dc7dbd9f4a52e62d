"""Train a tiny BERT classifier with `OTOTrainer`, dropout on, checkpointing every few steps (used by
tests/test_resume_after_kill.py).

``python resume_train_script.py OUTPUT_DIR RESULT`` trains to the end and saves the final weights and HSPG's
zero mask to RESULT. ``--resume CHECKPOINT`` resumes from a checkpoint written by an earlier run.
``--slow_after_save`` writes ``OUTPUT_DIR/saved-<step>`` after each checkpoint and slows every later step, so
that a test can kill the process (SIGKILL) while it trains past a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from ddp_train_script import SEQ_LEN, VOCAB, SyntheticPairs  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, TrainerCallback  # noqa: E402

from hf_oto import OTOTrainer, OTOTrainingArguments  # noqa: E402

MAX_STEPS = 32
SAVE_STEPS = 4


class SlowAfterSave(TrainerCallback):
    """Marks each finished checkpoint with a file, then makes the steps after it slow enough to be killed in."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir, self.saved = output_dir, False

    def on_save(self, args, state, control, **kwargs):
        open(os.path.join(self.output_dir, f"saved-{state.global_step}"), "w").close()
        self.saved = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.saved:
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("result")
    parser.add_argument("--resume", default=None)
    parser.add_argument("--slow_after_save", action="store_true")
    cli = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=SEQ_LEN,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    model = BertForSequenceClassification(config)
    args = OTOTrainingArguments(
        output_dir=cli.output_dir,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        per_device_train_batch_size=8,  # 8 steps per epoch: most checkpoints fall mid-epoch
        learning_rate=1e-3,
        max_steps=MAX_STEPS,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        logging_steps=SAVE_STEPS,
        seed=0,
        oto_target_group_sparsity=0.4,
        oto_n_p=0.2,
    )
    callbacks = [SlowAfterSave(cli.output_dir)] if cli.slow_after_save else []
    trainer = OTOTrainer(model=model, args=args, train_dataset=SyntheticPairs(), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=cli.resume)
    weights = {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}
    torch.save({"weights": weights, "zero_mask": trainer.hspg.zero_mask()}, cli.result)


if __name__ == "__main__":
    main()
