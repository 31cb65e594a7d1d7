from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CatalogError(ValueError):
    """Unknown catalog id or malformed catalog file; the message names the close matches."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MigProfile(_Strict):
    """One MIG GPU-instance profile of a card, from NVIDIA's MIG user guide ("Supported MIG Profiles")."""
    name: str = Field(description="profile name as nvidia-smi prints it, e.g. 1g.18gb")
    memory_gb: float = Field(gt=0, description="the nominal memory in the name, GB")
    memory_slices: int = Field(ge=1, le=8, description="memory slices it takes, of the card's 8")
    compute_slices: int = Field(ge=1, le=7, description="compute (SM) slices it takes, of the card's 7")
    max_instances: int = Field(ge=1, le=7, description="how many of it one card holds")


class GPUSpec(_Strict):
    id: str = Field(description="Melt's catalog id, e.g. H100-SXM-80GB")
    name: str = Field(description="Marketing name, e.g. NVIDIA H100 SXM5 80GB")
    memory_gb: float = Field(gt=0, description="Device memory in GB (10^9 bytes)")
    memory_mib: int | None = Field(default=None, gt=0, description="Total memory NVML reports, MiB (2^20 bytes): "
                                   "what the card really has; None = not measured, memory_gb is used")
    mem_bandwidth_gbs: float = Field(gt=0, description="Peak memory bandwidth, GB/s")
    bf16_tflops: float = Field(gt=0, description="Dense BF16 tensor TFLOP/s (no sparsity)")
    fp8_tflops: float | None = Field(default=None, description="Dense FP8 tensor TFLOP/s, None if unsupported")
    tdp_w: float = Field(gt=0, description="Board power / TDP in watts")
    interconnect_gbs: float | None = Field(default=None, gt=0, description="GPU-to-GPU bandwidth per direction, "
                                           "GB/s (NVLink); None = not listed (the simulator assumes PCIe)")
    price_per_hour: float = Field(ge=0, description="Default $/GPU-hour (user can override)")
    nvml_names: list[str] = Field(default_factory=list, description="Substrings of NVML device names that map to this entry")
    mig_profiles: list[MigProfile] = Field(default_factory=list, description="MIG profiles; empty = no MIG")
    sources: list[str] = Field(default_factory=list)

    @property
    def memory_bytes(self) -> float:
        """Bytes the card really has (NVML's total) where the catalog knows it, else the nominal GB as 10^9 bytes."""
        return self.memory_mib * 2**20 if self.memory_mib else self.memory_gb * 1e9


class ModelSpec(_Strict):
    id: str = Field(description="Hugging Face id, e.g. Qwen/Qwen3-0.6B")
    architecture: str = Field(description="transformers architecture class, e.g. Qwen3ForCausalLM")
    model_type: str = Field(description="config.json model_type, e.g. qwen3")
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0, description="Dense MLP size (or per-expert size for MoE)")
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    total_params_b: float = Field(gt=0, description="Total parameters, billions")
    active_params_b: float = Field(gt=0, description="Parameters touched per token, billions (== total for dense)")
    num_experts: int | None = None
    experts_per_token: int | None = None
    tie_word_embeddings: bool = False
    sliding_window: int | None = Field(default=None, gt=0, description="Sliding-window attention span, tokens")
    sliding_window_pattern: int | None = Field(
        default=None, gt=1, description="Every Nth layer is full attention, the others sliding (Gemma 3: 6)")
    dtype: str = "bfloat16"
    sources: list[str] = Field(default_factory=list)

    def kv_bytes_per_token(self, bytes_per_elem: float = 2.0) -> float:
        """K and V for every layer: 2 * layers * kv_heads * head_dim * bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * bytes_per_elem

    def attention_layer_counts(self) -> tuple[int, int]:
        """(full-attention layers, sliding-window layers): Gemma 3's pattern makes layer i full when (i + 1) % N == 0."""
        if not self.sliding_window or not self.sliding_window_pattern:
            return self.num_layers, 0
        full = self.num_layers // self.sliding_window_pattern
        return full, self.num_layers - full

    def kv_alloc_layers(self) -> int:
        """Layers vLLM allocates KV for per token (v1 KV-cache manager, kv_cache_utils
        `_get_kv_cache_groups_uniform_page_size`): with two attention types the layers of each type are cut into
        groups of one size (the smaller bucket's count, or the larger's when it is < 1.5x the smaller), the last
        group of a type padded with empty layers, and every group takes a page per token block. Gemma-3-27B: 10 full
        + 52 sliding -> groups of 10 -> 1 + 6 groups = 70 layers' worth (vLLM logs "Add 8 padding layers")."""
        full, sliding = self.attention_layer_counts()
        if not sliding or not full:
            return self.num_layers
        small, big = min(full, sliding), max(full, sliding)
        group = big if big < small * 1.5 else small
        return group * (-(-full // group) + -(-sliding // group))

    def kv_alloc_bytes_per_token(self, bytes_per_elem: float = 2.0) -> float:
        """KV-cache bytes an engine reserves per token of capacity (padded groups included)."""
        return 2 * self.kv_alloc_layers() * self.num_kv_heads * self.head_dim * bytes_per_elem

    def embedding_params(self) -> float:
        """Token embedding + LM head parameters (one matrix when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def weight_bytes(self, bytes_per_param: float = 2.0) -> float:
        return self.total_params_b * 1e9 * bytes_per_param
