"""Dummy-weight GGUF files for llama.cpp: random tensors in a catalog model's shape, Melt's BPE as the tokenizer.

llama.cpp has no `--load-format dummy`: it reads every weight from one GGUF file. So Melt writes that file itself, with
the `gguf` package (llama.cpp's own writer), from the catalog entry: the same layer count, widths, heads and vocabulary
as the real checkpoint, random values (throughput does not depend on them when output lengths are fixed), no
download. Weights are Q8_0 (what a llama.cpp user serves most; blocks of 32 int8 + one f16 scale, written directly
from random bytes, no float round trip) or F16; norms are F32 ones, as converted checkpoints carry them.

The tokenizer is catalog/tokenizer.py's byte-level BPE for the model's vocabulary size (tokens in id order, merges as
"a b"), declared as llama.cpp's "gpt2" model with the "gpt-2" pre-tokenizer: the same regex the BPE was trained
behind, so llama.cpp splits text as the `tokenizers` library does and the server's usage counts agree with the
prompts Melt makes. No BOS is added (Melt's tokenizer adds none either).

Architectures: qwen3 (with q/k norms) and llama; others raise, naming the two.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from catalog.models import ModelSpec
from catalog.tokenizer import BOS_ID, EOS_ID, SPECIALS, UNK_ID, tokenizer_json
from engines.dummy import CHAT_TEMPLATE, _FAMILY

ARCHS = ("qwen3", "llama")
QUANTS = ("Q8_0", "F16")
_SCALE = 0.02  # std of the random weights (initializer_range of the families' configs)


def _tensor_shapes(model: ModelSpec) -> list[tuple[str, tuple[int, ...]]]:
    """(GGUF tensor name, numpy shape = (out, in) as in the HF checkpoint) for every tensor llama.cpp loads."""
    h, ff, hd = model.hidden_size, model.intermediate_size, model.head_dim
    q, kv = model.num_attention_heads * hd, model.num_kv_heads * hd
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (model.vocab_size, h))]
    for i in range(model.num_layers):
        b = f"blk.{i}"
        out += [(f"{b}.attn_norm.weight", (h,)), (f"{b}.attn_q.weight", (q, h)), (f"{b}.attn_k.weight", (kv, h)),
                (f"{b}.attn_v.weight", (kv, h)), (f"{b}.attn_output.weight", (h, q))]
        if model.model_type == "qwen3":
            out += [(f"{b}.attn_q_norm.weight", (hd,)), (f"{b}.attn_k_norm.weight", (hd,))]
        out += [(f"{b}.ffn_norm.weight", (h,)), (f"{b}.ffn_gate.weight", (ff, h)), (f"{b}.ffn_up.weight", (ff, h)),
                (f"{b}.ffn_down.weight", (h, ff))]
    out.append(("output_norm.weight", (h,)))
    if not model.tie_word_embeddings:
        out.append(("output.weight", (model.vocab_size, h)))
    return out


def gguf_bytes_estimate(model: ModelSpec, quant: str = "Q8_0") -> int:
    """Bytes of tensor data the file will hold (for a disk-space check before writing a large model)."""
    per = {"Q8_0": 34 / 32, "F16": 2.0}[quant]
    total = 0
    for _name, shape in _tensor_shapes(model):
        n = int(np.prod(shape))
        total += n * 4 if len(shape) == 1 else int(n * per)
    return total


def _random_q8_0(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Q8_0 blocks for a (rows, cols) matrix: per 32 values one f16 scale then 32 int8 (GGML's block_q8_0)."""
    rows, cols = shape
    nb = cols // 32
    q = rng.integers(-127, 128, size=(rows, nb, 32), dtype=np.int8)
    # value = d * q; uniform q in [-127, 127] has std ~73, so d = SCALE / 73 gives weights of std ~SCALE
    d = np.full((rows, nb, 1), _SCALE / 73.0, dtype=np.float16)
    blocks = np.concatenate([d.view(np.uint8), q.view(np.uint8)], axis=2)  # (rows, nb, 34)
    return blocks.reshape(rows, nb * 34)


def _tokenizer_lists(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    tj = tokenizer_json(vocab_size)
    vocab: dict[str, int] = tj["model"]["vocab"]
    tokens = [""] * vocab_size
    for t, i in vocab.items():
        tokens[i] = t
    if any(t == "" for t in tokens):
        raise ValueError(f"the dummy BPE for vocab_size {vocab_size} has gaps in its ids")
    # llama_token_type: 1 normal, 3 control
    types = [3 if i < len(SPECIALS) else 1 for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in tj["model"]["merges"]]
    return tokens, types, merges


def write_gguf(model: ModelSpec, dest: Path, quant: str = "Q8_0", seed: int = 0) -> Path:
    """Write a dummy GGUF of `model` to dest (atomically: a reader never sees half a file). Returns dest."""
    import gguf  # the package is only needed when a GGUF is written

    if model.model_type not in ARCHS:
        raise ValueError(f"no dummy GGUF for model_type {model.model_type!r} ({model.id}): Melt writes {ARCHS}")
    if model.num_experts:
        raise ValueError(f"{model.id} is a mixture of experts: the dummy GGUF writer does dense models only")
    if quant not in QUANTS:
        raise ValueError(f"quantization {quant!r}: the dummy GGUF writer does {QUANTS}")
    for dim in (model.hidden_size, model.intermediate_size, model.num_attention_heads * model.head_dim):
        if quant == "Q8_0" and dim % 32:
            raise ValueError(f"Q8_0 needs widths divisible by 32; {model.id} has {dim}: use F16")
    arch = model.model_type
    fam = _FAMILY.get(arch, {})
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    w.add_name(f"{model.id} (Melt dummy weights)")
    w.add_description("random weights written by Melt (engines/gguf_dummy.py) for benchmarking; not a real model")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "Q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(model.max_position_embeddings)
    w.add_embedding_length(model.hidden_size)
    w.add_block_count(model.num_layers)
    w.add_feed_forward_length(model.intermediate_size)
    w.add_head_count(model.num_attention_heads)
    w.add_head_count_kv(model.num_kv_heads)
    w.add_key_length(model.head_dim)
    w.add_value_length(model.head_dim)
    w.add_rope_dimension_count(model.head_dim)
    w.add_rope_freq_base(float(fam.get("rope_theta", 10_000)))
    w.add_layer_norm_rms_eps(float(fam.get("rms_norm_eps", 1e-6)))
    w.add_vocab_size(model.vocab_size)
    tokens, types, merges = _tokenizer_lists(model.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_unk_token_id(UNK_ID)
    w.add_pad_token_id(UNK_ID)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    rng = np.random.default_rng(seed)
    for name, shape in _tensor_shapes(model):
        if len(shape) == 1:
            w.add_tensor(name, np.ones(shape, dtype=np.float32))
        elif quant == "Q8_0":
            # raw_dtype with the byte array: the writer derives the logical shape from the bytes per row
            w.add_tensor(name, _random_q8_0(rng, shape), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, (rng.standard_normal(shape, dtype=np.float32) * _SCALE).astype(np.float16))
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
