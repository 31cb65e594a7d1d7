"""Dummy-weight model directories: config.json + tokenizer written from a catalog ModelSpec, no download.

Engines started with `--load-format dummy` read only the config (to build the model) and the tokenizer (to
serve requests) and fill the weights with random values. Throughput does not depend on weight values when the
output length is fixed (ignore_eos), so a dummy model benchmarks like the real one, provided the server's
frontend does the work a real one does: the tokenizer is a byte-level BPE with exactly vocab_size tokens
(catalog/tokenizer.py: trained offline on the Python standard library, cached), so text prompts are really
tokenized and streamed tokens really detokenized.

Per-architecture defaults (rope theta, norm epsilon, ...) are the published values of the family's configs;
they do not change speed, only keep the engines' config checks happy.
"""
from __future__ import annotations

import json
from pathlib import Path

from catalog.loader import get_model
from catalog.models import ModelSpec
from catalog.tokenizer import BOS_ID, EOS_ID, SPECIALS, UNK_ID
from catalog.tokenizer import tokenizer_json as bpe_tokenizer_json
from engines.spec import EngineSpec

# A minimal ChatML template so /v1/chat/completions works too.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)

# Family defaults, copied from the public config.json files of each family (sources in assets/models.yaml).
_FAMILY: dict[str, dict] = {
    "qwen3": {"rope_theta": 1_000_000, "rms_norm_eps": 1e-6, "hidden_act": "silu", "attention_bias": False},
    "qwen3_moe": {"rope_theta": 1_000_000, "rms_norm_eps": 1e-6, "hidden_act": "silu", "attention_bias": False,
                  "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True},
    "qwen2": {"rope_theta": 1_000_000, "rms_norm_eps": 1e-6, "hidden_act": "silu"},
    "llama": {"rope_theta": 500_000, "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_bias": False,
              "mlp_bias": False},
    "mistral": {"rope_theta": 1_000_000, "rms_norm_eps": 1e-5, "hidden_act": "silu"},
    "gemma3_text": {"rope_theta": 1_000_000, "rope_local_base_freq": 10_000, "rms_norm_eps": 1e-6,
                    "hidden_activation": "gelu_pytorch_tanh", "sliding_window": 1024, "sliding_window_pattern": 6,
                    "final_logit_softcapping": None, "attn_logit_softcapping": None},
}


def _text_only(model: ModelSpec) -> tuple[str, str]:
    """(architecture, model_type) to write. Multimodal checkpoints are written as their text decoder: Melt
    benchmarks text, and a vision tower nobody calls changes neither the decode speed nor the KV cache."""
    if model.model_type == "gemma3":
        return "Gemma3ForCausalLM", "gemma3_text"
    return model.architecture, model.model_type


def model_config(model: ModelSpec) -> dict:
    arch, mtype = _text_only(model)
    cfg: dict = {
        "architectures": [arch],
        "model_type": mtype,
        "hidden_size": model.hidden_size,
        "intermediate_size": model.intermediate_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_key_value_heads": model.num_kv_heads,
        "head_dim": model.head_dim,
        "vocab_size": model.vocab_size,
        "max_position_embeddings": model.max_position_embeddings,
        "tie_word_embeddings": model.tie_word_embeddings,
        "torch_dtype": model.dtype,  # transformers < 5 reads this key ...
        "dtype": model.dtype,  # ... transformers >= 5 this one
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": UNK_ID,
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "use_cache": True,
        "rope_scaling": None,
    }
    cfg.update(_FAMILY.get(mtype, {"rope_theta": 10_000, "rms_norm_eps": 1e-6, "hidden_act": "silu"}))
    if model.num_experts:
        # Qwen-MoE spelling; intermediate_size in the catalog is the per-expert width.
        cfg.update({"num_experts": model.num_experts, "num_experts_per_tok": model.experts_per_token or 1,
                    "moe_intermediate_size": model.intermediate_size})
    if mtype == "gemma3_text":
        cfg["query_pre_attn_scalar"] = model.head_dim
    if model.sliding_window and model.sliding_window_pattern:  # the catalog's window wins over the family default
        cfg.update({"sliding_window": model.sliding_window, "sliding_window_pattern": model.sliding_window_pattern})
    if mtype in ("qwen3", "qwen3_moe", "qwen2"):
        cfg.update({"use_sliding_window": False, "sliding_window": None, "max_window_layers": model.num_layers})
    cfg["melt_dummy"] = {"catalog_id": model.id, "note": "written by Melt for --load-format dummy; no weights"}
    return cfg


def tokenizer_json(vocab_size: int) -> dict:
    """A complete tokenizer.json (HF `tokenizers` format): byte-level BPE over exactly vocab_size tokens."""
    if vocab_size <= len(SPECIALS):
        raise ValueError(f"vocab_size {vocab_size} is too small for a dummy tokenizer")
    return bpe_tokenizer_json(vocab_size)


def tokenizer_config(model: ModelSpec) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIALS[BOS_ID],
        "eos_token": SPECIALS[EOS_ID],
        "unk_token": SPECIALS[UNK_ID],
        "pad_token": SPECIALS[UNK_ID],
        "model_max_length": model.max_position_embeddings,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        "chat_template": CHAT_TEMPLATE,
    }


def write_model_dir(model: ModelSpec, dest: Path) -> Path:
    """Write config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json and
    generation_config.json for `model` into dest (created; existing files replaced). Returns dest."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": model_config(model),
        "tokenizer.json": tokenizer_json(model.vocab_size),
        "tokenizer_config.json": tokenizer_config(model),
        "special_tokens_map.json": {"bos_token": SPECIALS[BOS_ID], "eos_token": SPECIALS[EOS_ID],
                                    "unk_token": SPECIALS[UNK_ID], "pad_token": SPECIALS[UNK_ID]},
        # Greedy by default: the engines read sampling defaults from here.
        "generation_config.json": {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "do_sample": False},
    }
    for name, obj in files.items():
        tmp = dest / f".{name}.tmp"
        tmp.write_text(json.dumps(obj, indent=1 if name != "tokenizer.json" else None, ensure_ascii=False))
        tmp.replace(dest / name)  # atomic: a reader never sees half a file
    return dest


def model_path_for(spec: EngineSpec, workdir: Path) -> str:
    """What to pass an engine as its model: spec.model itself for real weights (HF id or local path); for dummy
    weights a local directory with config + tokenizer: spec.model if it already is one, else the catalog entry
    written out under workdir/dummy-model."""
    if not spec.dummy_weights:
        return spec.model
    local = Path(spec.model).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ValueError(f"dummy weights: {local} has no config.json")
        return str(local)
    model = get_model(spec.model)  # CatalogError (a ValueError) naming close matches when unknown
    return str(write_model_dir(model, Path(workdir) / "dummy-model"))
