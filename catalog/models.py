from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CatalogError(ValueError):
    """Unknown catalog id or malformed catalog file; the message names the close matches."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    dtype: str = "bfloat16"
    sources: list[str] = Field(default_factory=list)

    def kv_bytes_per_token(self, bytes_per_elem: float = 2.0) -> float:
        """K and V for every layer: 2 * layers * kv_heads * head_dim * bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * bytes_per_elem

    def weight_bytes(self, bytes_per_param: float = 2.0) -> float:
        return self.total_params_b * 1e9 * bytes_per_param
