"""Planner: will a recipe (assets/recipes/*.yaml) fit on these GPUs? Stacked memory per GPU, the verdict, per-LLM KV
tokens and concurrency, each engine's memory flag, and what to change. Layout only: the numbers are bench.plan's."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui.charts import plan_bars
from app.ui.common import detected_gpus, esc_md, gpu_catalog, model_catalog, page_header, show_chart, show_table
from app.ui.launch_form import match_catalog_gpu
from bench.plan import PLANNABLE, plan
from catalog.recipes import RecipeError, list_recipes, load_recipe

page_header("Planner", "Weights, runtime, KV cache and services per GPU for a deployment recipe, at the memory the "
                       "card really has. Pure arithmetic: nothing is launched.")
gpus, gpu_err = gpu_catalog()
models, model_err = model_catalog()
if gpu_err or model_err:
    st.error(esc_md(gpu_err or model_err))
    st.stop()

names = list_recipes()
if not names:
    st.info("No recipes in assets/recipes/.")
    st.stop()


def _recipe_changed() -> None:  # a new recipe brings its own GPU and count
    for k in ("p_gpu", "p_count"):
        st.session_state.pop(k, None)


a, b, c, d, e = st.columns([2, 2, 1, 1, 1])
name = a.selectbox("Recipe", names, index=names.index("dwani") if "dwani" in names else 0, key="p_recipe",
                   on_change=_recipe_changed)
try:
    recipe = load_recipe(name)
except RecipeError as err:
    st.error(esc_md(str(err)))
    st.stop()
ids = list(gpus)
gpu_id = b.selectbox("GPU", ids, index=ids.index(recipe.gpu) if recipe.gpu in ids else 0, key="p_gpu")
count = c.number_input("GPUs", min_value=1, max_value=64, value=recipe.count or recipe.gpus_used(), key="p_count")
mem = d.number_input("Memory GB (0 = the card's)", min_value=0.0, value=0.0, step=8.0, key="p_mem")
ctx = e.number_input("Context (0 = max model len)", min_value=0, value=0, step=1024, key="p_ctx")
if recipe.description:
    st.caption(esc_md(recipe.description))
# A detected GPU of the chosen kind: plan with the memory NVML reports for it (MiB), not the catalog's figure
nvml, _ = detected_gpus()
label = None
here = [g for g in nvml if g.get("memory_total_mb") and match_catalog_gpu(g.get("name"), gpus) == gpu_id]
if here and not mem:
    mem = here[0]["memory_total_mb"] * 2**20 / 1e9
    label = f"detected: NVML total {here[0]['memory_total_mb']:,.0f} MiB"
    st.caption(esc_md(f"Memory from the detected GPU {here[0].get('index')} ({here[0].get('name')}): "
                      f"{here[0]['memory_total_mb']:,.0f} MiB = {mem:,.1f} GB (NVML)."))

p = plan(recipe, gpus[gpu_id], models, count=int(count), memory_gb=mem or None, context_len=int(ctx) or None,
         memory_label=label)
doc = p.as_dict()
(st.success if p.fits else st.error)(esc_md(p.verdict()))
show_chart(plan_bars(doc["gpus"], plannable_gb=PLANNABLE * p.total_gb), key="p-bars", filename=f"plan_{name}")

st.subheader("LLM instances")
show_table(pd.DataFrame([{
    "instance": i["name"], "engine": i["engine"], "model": i["model"], "GPUs": ",".join(map(str, i["gpus"])),
    "TP x DP": f"{i['tp']}x{i['dp']}", "weights GB/GPU": round(i["weights_gb"], 1),
    "runtime GB/GPU": round(i["runtime_gb"], 1), "KV GB/GPU": round(i["kv_gb"], 1), "KV tokens": i["kv_tokens"],
    "context": i["context_len"], "max concurrent": i["max_concurrent"], "traffic weight": i["weight"],
    "engine memory setting": f"{i['engine_flag']} {i['engine_value']:.3f}", "fits": i["fits"]}
    for i in doc["instances"]]), key="p-inst", filename=f"plan_{name}_instances")
if recipe.services:
    st.subheader("Services (counted by their VRAM)")
    show_table(pd.DataFrame([{"service": s.name, "kind": s.kind, "model": s.model, "GPU": s.gpu, "VRAM GB": s.vram_gb,
                              "source": s.source or ""} for s in recipe.services]), key="p-svc")
if p.suggestions:
    st.subheader("What to change")
    st.markdown("\n".join(f"- {esc_md(s.strip())}" for s in p.suggestions))
st.caption("Each GPU: services first, then the instances in recipe order, each started once the previous one is "
           "ready; instances without a memory setting share 90% of the GPU (vLLM's default utilisation). "
           "GB = 10^9 bytes.")
