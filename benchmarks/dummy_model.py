"""Model directories for `--load-format dummy`: a real model's shape, random weights, and a
word-level tokenizer of the model's whole vocabulary.

Speed does not depend on the weights' values once EOS is ignored, so a benchmark on the GPU lease
(where no model can be downloaded) runs a named shape:

    --model-path llama-3.1-8b-shape --load-format dummy     Llama-3.1-8B, bf16 on the GPU
    --model-path tiny-llama-shape --load-format dummy       2 layers, 512 ids: CPU runs and CI

The directory holds `config.json` and a tokenizer built with the `tokenizers` library, one word
per id (`w0`, `w1`, ...; the model's BOS/EOS ids carry special names), saved with
`PreTrainedTokenizerFast.save_pretrained`, so the Engine and the server load it like any model's.
Text that is not made of those words encodes to the unknown token (id 0), one per word or
punctuation run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

UNK_TOKEN = "<unk>"
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"

LLAMA_31_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}

# Small enough for a CPU run of a few prompts in seconds; head_dim 16.
TINY_LLAMA: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}

SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.1-8b-shape": LLAMA_31_8B,
    "tiny-llama-shape": TINY_LLAMA,
}


def is_shape_name(model_path: str | None) -> bool:
    return model_path in SHAPES


def write_dummy_model_dir(shape: str, directory: Path) -> Path:
    """Writes directory/shape with the shape's config.json and a word-level tokenizer of its
    vocabulary; returns that folder. KeyError names the known shapes."""
    if shape not in SHAPES:
        raise KeyError(f"unknown model shape {shape!r}; known: {', '.join(SHAPES)}")
    config = SHAPES[shape]
    model_dir = directory / shape
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    write_word_tokenizer(model_dir, config)
    return model_dir


def write_word_tokenizer(model_dir: Path, config: dict[str, Any]) -> None:
    """One word per id: `w{id}`, except id 0 (the unknown token), BOS and the first EOS id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    eos = config["eos_token_id"]
    first_eos = eos if isinstance(eos, int) else eos[0]
    special = {0: UNK_TOKEN, config["bos_token_id"]: BOS_TOKEN, first_eos: EOS_TOKEN}
    vocab = {special.get(i, f"w{i}"): i for i in range(config["vocab_size"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    # Words and punctuation runs apart (\w+|[^\w\s]+): text counts about as many tokens as a
    # BPE tokenizer's pre-tokens, so ShareGPT lengths stay near a real tokenizer's.
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    # Decoded words are joined by spaces, so decode(encode(text)) round-trips for such text.
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=UNK_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        model_max_length=config["max_position_embeddings"],
    )
    fast.save_pretrained(str(model_dir))
