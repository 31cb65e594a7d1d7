"""Launch: pick GPUs, engine, model, engine settings and workload; see the memory fit; Start = run row + worker."""
from __future__ import annotations

import streamlit as st

from app.ui import charts
from app.ui.common import (detected_engines, detected_gpus, esc_md, gpu_catalog, gpu_holders, model_catalog,
                           page_header, show_chart, worker_api)
from app.ui.launch_form import (LaunchValues, build_run_config, form_problems, match_catalog_gpu, recipe_rows,
                                sim_error_lines, values_from_config)
from catalog.recipes import list_recipes
from storage.db import to_url
from bench.workload import ENDPOINT_HELP, PROMPT_FORMAT_HELP

ENGINES = {"sim": "Simulator (built-in, no GPU: SIMULATED)", "vllm": "vLLM", "sglang": "SGLang",
           "trtllm": "TensorRT-LLM", "llamacpp": "llama.cpp", "openai": "Already running OpenAI-compatible server"}
DTYPES = ["auto", "bfloat16", "float16", "float32"]
QUANTS = ["none", "fp8", "awq", "gptq", "int8", "w8a8", "nvfp4", "mxfp4", "bitsandbytes"]
KV_DTYPES = ["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]
OTHER_MODEL = "Other (Hugging Face id or local path)…"
D = LaunchValues()

page_header("Launch a sweep", "Start runs in a background worker: closing this tab never stops them.")
top_bar = st.container()  # filled at the end: a Start above the fold (the form is taller than a 1080p screen)

gpu_cat, gpu_cat_err = gpu_catalog()
model_cat, model_cat_err = model_catalog()
engines, engines_err = detected_engines()
nvml_gpus, nvml_line = detected_gpus()
eng_info = {e["kind"]: e for e in engines}
ss = st.session_state


def _default(key: str, value) -> None:
    if key not in ss:
        ss[key] = value


# ?from=ID: prefill from a stored run ("Open in Launch" on the Runs page), once per id.
src = st.query_params.get("from")
if src and ss.get("_l_prefilled") != src:
    ss["_l_prefilled"] = src
    try:
        from storage.queries import get_run

        d = get_run(int(src))
        if d is not None:
            v = values_from_config(d.config)
            widget_none = {"mem_fraction": 0.9, "max_seqs": 0, "max_model_len": 0, "price": 0.0}
            for k, val in v.__dict__.items():
                if k not in ("extra", "gpu_indices"):
                    ss[f"l_{k}"] = widget_none.get(k, val) if val is None else val
            if v.recipe and v.recipe not in list_recipes():  # a recipe file of its own: not one the picker has
                ss["l_recipe"] = ""
                st.warning(f"Run #{int(src)} deployed recipe {esc_md(v.recipe)}, which is not a bundled recipe: "
                           "run it again with ./melt sweep --recipe FILE.")
            ss["l_model_pick"] = v.model if v.model in model_cat else OTHER_MODEL
            ss["l_model_other"] = v.model
            ss["l_name"] = (v.name + " (again)").strip() if v.name else ""
            ss["_l_price_for"] = v.gpu  # keep the run's own price instead of the catalog default
            st.toast(f"Settings copied from run #{int(src)}")
    except Exception as e:  # noqa: BLE001 - a bad link must not break the page
        st.warning(f"Could not copy settings from run {esc_md(src)}: {esc_md(e)}")

if gpu_cat_err:
    st.warning(f"GPU catalog not available: {esc_md(gpu_cat_err)}")
if model_cat_err:
    st.warning(f"Model catalog not available: {esc_md(model_cat_err)}")

left, right = st.columns(2, gap="large")

# ------------------------------------------------------------------------------------------ engine, model, GPUs
with left:
    st.subheader("Engine and model")
    _default("l_engine", "sim")
    _default("l_recipe", "")
    recipe = st.selectbox("Deployment", ["", *list_recipes()], key="l_recipe",
                          format_func=lambda r: r or "one engine (set below)",
                          help="A recipe (assets/recipes/*.yaml) deploys several instances, started one after "
                               "another, with weighted traffic; the memory planner refuses one that does not fit. "
                               "Its engines come from the recipe: below, only engine command and dummy weights apply.")

    def _engine_label(kind: str) -> str:
        if kind in ("sim", "openai"):
            return ENGINES[kind]
        info = eng_info.get(kind)
        if info is None:
            return f"{ENGINES[kind]} (not detected)"
        return f"{ENGINES[kind]} ({info['version'] or 'installed'})" if info["installed"] else \
            f"{ENGINES[kind]} (not installed)"

    engine = st.selectbox("Engine", list(ENGINES), format_func=_engine_label, key="l_engine", disabled=bool(recipe))
    # a recipe names its own engines: only the engine command (its vLLM instances) and dummy weights apply from here
    real = engine not in ("sim", "openai") or bool(recipe)
    engine_missing = not recipe and real and not (eng_info.get(engine) or {}).get("installed")
    sim_note = st.container() if engine == "sim" and not recipe else None  # + its expected error, once known
    if sim_note is not None:
        sim_note.caption(":orange-badge[SIMULATED] A roofline model of the chosen GPU; every number it produces is "
                         "labelled simulated.")
    if engine == "trtllm":
        st.caption("TensorRT-LLM is argv-only in Melt: the `tensorrt-llm` package on PyPI is a stub that fails to "
                   "install without NVIDIA's own index, so its flags are tested against its source, not run here. Run "
                   "Melt inside NVIDIA's TensorRT-LLM container.")
    if engine == "llamacpp":
        st.caption("llama.cpp through llama-cpp-python's server: one GGUF, one request at a time (higher concurrency "
                   "only queues). Dummy weights: Melt writes a GGUF in the model's shape (Q8_0; quantization F16 for "
                   "F16). Its streams carry no usage: output tokens = max_tokens when a stream ends at the length "
                   "limit, prompt tokens = the exact length Melt made (same tokenizer); levels say so.")
    if real:
        info = eng_info.get(engine)
        if engines_err:
            st.info(esc_md(engines_err))
        if engine_missing:
            how = (info or {}).get("how_to_install") or f"python -m bench engines install {engine}"
            st.warning(f"{ENGINES[engine]} is not installed here. To install:")
            st.code(how, language="bash")
        _default("l_engine_cmd", "")
        st.text_input("Engine command (optional)", key="l_engine_cmd",
                      help="argv prefix that starts the engine, e.g. a path in its own virtualenv. Default: found "
                           "by the engine registry.")
    if engine == "openai":
        _default("l_base_url", "http://127.0.0.1:8000")
        st.text_input("Server URL", key="l_base_url")

    model_options = list(model_cat) + [OTHER_MODEL]
    _default("l_model_pick", D.model if D.model in model_cat else OTHER_MODEL)
    pick = st.selectbox("Model", model_options, key="l_model_pick", disabled=bool(recipe))
    if pick == OTHER_MODEL:
        _default("l_model_other", "")
        model = st.text_input("Model id or path", key="l_model_other", placeholder="org/model or /path/to/model")
    else:
        model = pick
    if real:
        _default("l_dummy_weights", False)
        st.toggle("Dummy weights (no download; throughput is the same for fixed output lengths)",
                  key="l_dummy_weights")

    st.subheader("GPUs")
    gpu_ids = list(gpu_cat)
    default_gpu = "H100-SXM-80GB" if "H100-SXM-80GB" in gpu_cat else (gpu_ids[0] if gpu_ids else None)
    _default("l_gpu", default_gpu)
    _default("l_gpu_count", 1)
    gpu_indices: list[int] | None = None
    gpu_mem_gb: float | None = None
    if engine == "sim" or not nvml_gpus:
        if engine != "sim":
            st.info(f"No NVIDIA GPU detected ({esc_md(nvml_line)}). Choose the GPU from the catalog for labels "
                    "and price.")
        if gpu_ids:
            st.selectbox("GPU to simulate" if engine == "sim" else "GPU (catalog)", gpu_ids, key="l_gpu",
                         format_func=lambda g: f"{g} — {gpu_cat[g].memory_gb:.0f} GB")
        else:
            st.text_input("GPU (catalog id)", key="l_gpu")
        st.number_input("Number of GPUs", min_value=1, max_value=64, step=1, key="l_gpu_count")
        gspec = gpu_cat.get(ss.get("l_gpu") or "")
        gpu_mem_gb = gspec.memory_gb if gspec else None
    else:
        st.caption(esc_md(nvml_line))
        by_index = {g["index"]: g for g in nvml_gpus}
        _default("l_gpu_indices", [min(by_index)])
        gpu_indices = st.multiselect(
            "GPUs to use", list(by_index), key="l_gpu_indices",
            format_func=lambda i: f"{i}: {by_index[i].get('name')} ({(by_index[i].get('memory_total_mb') or 0) / 1024:.0f} GiB)")
        if gpu_indices:
            first = by_index[gpu_indices[0]]
            matched = match_catalog_gpu(first.get("name"), gpu_cat)
            if matched and ss.get("l_gpu") not in gpu_cat:
                ss["l_gpu"] = matched
            mems = [by_index[i].get("memory_total_mb") for i in gpu_indices if by_index[i].get("memory_total_mb")]
            gpu_mem_gb = min(mems) * 1024 * 1024 / 1e9 if mems else None
        if gpu_ids:
            st.selectbox("Catalog entry (specs, default price)", gpu_ids, key="l_gpu")

    if engine != "openai":
        with st.expander("Engine settings", expanded=False):
            _default("l_mem_fraction", 0.9)
            _default("l_max_seqs", 0)
            _default("l_max_model_len", 0)
            _default("l_dtype", "auto")
            _default("l_quantization", "none")
            _default("l_kv_cache_dtype", "auto")
            _default("l_tp", 1)
            _default("l_dp", 1)
            _default("l_extra_args", "")
            st.slider("GPU memory fraction", 0.3, 0.98, step=0.01, key="l_mem_fraction")
            a, b = st.columns(2)
            a.number_input("Max concurrent sequences (0 = engine default)", min_value=0, step=16, key="l_max_seqs")
            b.number_input("Max model length (0 = model default)", min_value=0, step=1024, key="l_max_model_len")
            a.selectbox("dtype", DTYPES, key="l_dtype")
            b.selectbox("Quantization", QUANTS, key="l_quantization")
            a.selectbox("KV-cache dtype", KV_DTYPES, key="l_kv_cache_dtype")
            c, d = st.columns(2)
            c.number_input("Tensor parallel (TP)", min_value=1, max_value=64, step=1, key="l_tp")
            d.number_input("Data parallel (DP)", min_value=1, max_value=64, step=1, key="l_dp")
            st.text_input("Extra engine args", key="l_extra_args", placeholder="--enforce-eager --seed 1")

# ---------------------------------------------------------------------------------------------------- workload
with right:
    st.subheader("Workload")
    for k in ("levels", "stop_by", "requests", "duration_s", "warmup", "input_len", "output_len", "endpoint",
              "prompt_format", "tokenizer", "prefix_len", "slo_ttft_ms", "slo_tpot_ms", "slo_e2e_ms", "name", "tags",
              "min_steady_s", "min_requests_per_user", "arrivals", "rates", "burstiness", "ramp_up", "connect_at_go", "repeat",
              "mode", "slo_preset", "slo_percentile", "slo_start", "slo_max", "alerts", "gpu_metrics_url"):
        _default(f"l_{k}", getattr(D, k))
    st.radio("Mode", ["sweep", "slo"], key="l_mode", horizontal=True,
             format_func=lambda x: "sweep these levels" if x == "sweep" else "SLO search (bisect)",
             help="SLO search: the highest concurrency whose latency percentiles meet the limits, probing up x2 "
                  "then bisecting; every probe is a normal stored level")
    if ss["l_mode"] == "slo":
        a, b, c = st.columns(3)
        a.selectbox("Limits", ["interactive", "standard", "custom"], key="l_slo_preset",
                    format_func=lambda x: {"interactive": "MLPerf interactive", "standard": "MLPerf standard",
                                           "custom": "custom (the SLO fields below)"}[x],
                    help="MLPerf Inference Server-scenario p99 TTFT/TPOT limits for the model's size")
        b.number_input("Start at", min_value=1, step=1, key="l_slo_start")
        c.number_input("Up to", min_value=1, step=64, key="l_slo_max")
        if ss["l_slo_preset"] == "custom":
            st.selectbox("Percentile of the limits", [50, 90, 95, 99], key="l_slo_percentile")
    else:
        st.text_input("Concurrency levels", key="l_levels",
                      help="Comma-separated, e.g. 1,8,64,256 (with request rates: the cap on requests in flight)")
    st.radio("Arrivals", ["closed", "rate"], key="l_arrivals", horizontal=True,
             format_func=lambda x: "closed loop (users)" if x == "closed" else "request rate (Poisson / gamma)")
    a, b = st.columns(2)
    if ss["l_arrivals"] == "rate":
        a.text_input("Request rates, req/s", key="l_rates",
                     help="One rate, or a rate sweep like 5,10,20: one level per rate at each concurrency cap")
        b.number_input("Burstiness", min_value=0.01, step=0.1, key="l_burstiness",
                       help="Gamma shape of the inter-arrival times (mean 1/rate), as vllm bench serve: 1 = Poisson, "
                            "below 1 burstier, above 1 more even")
    else:
        a.text_input("Ramp-up seconds", key="l_ramp_up",
                     help="User g of C starts at g × ramp / C so users do not move in lockstep; 'auto' = 50 ms per "
                          "user after the first, at most 5 s; 0 = all at once")
    st.checkbox("Connect at go (as vllm bench serve)", key="l_connect_at_go",
                help="Users open their connections when the level starts, so the connects count in its TTFT. By default "
                     "Melt opens them before the level; runs with this on are labelled 'connections at go'")
    st.radio("Each level stops after", ["steady", "requests", "duration"], key="l_stop_by", horizontal=True,
             format_func=lambda x: {"steady": "enough steady state", "requests": "a number of requests",
                                    "duration": "a duration"}[x])
    a, b = st.columns(2)
    if ss["l_stop_by"] == "steady":
        a.number_input("Seconds of steady state", min_value=1.0, step=10.0, key="l_min_steady_s",
                       help="Steady state: every user has finished its first request; at most 20 min per level")
        b.number_input("Requests per user (at least)", min_value=1, step=1, key="l_min_requests_per_user")
    elif ss["l_stop_by"] == "requests":
        a.number_input("Requests per level", min_value=1, step=50, key="l_requests")
    else:
        a.number_input("Seconds per level", min_value=1.0, step=10.0, key="l_duration_s")
    a, b = st.columns(2)
    a.number_input("Warm-up requests per level", min_value=0, step=10, key="l_warmup")
    b.number_input("Repeats", min_value=1, max_value=100, step=1, key="l_repeat",
                   help="Run the whole sweep this many times; levels then show mean ± 95% confidence interval")
    length_help = ("N (fixed), MIN:MAX (uniform), normal:MEAN,STD or lognormal[:MEAN,SIGMA]; bare 'lognormal' is "
                   "chat-like (LMSYS-Chat-1M mean lengths, sigma 1.0 assumed)")
    a.text_input("Input tokens", key="l_input_len", help=length_help)
    b.text_input("Output tokens", key="l_output_len", help=length_help)
    a.selectbox("Endpoint", ["completions", "chat"], key="l_endpoint", help=ENDPOINT_HELP)
    b.selectbox("Prompts", ["text", "token-ids"], key="l_prompt_format", help=PROMPT_FORMAT_HELP,
                format_func=lambda x: "text (as real clients)" if x == "text" else "token ids (labelled)")
    a.number_input("Shared prefix tokens", min_value=0, step=64, key="l_prefix_len",
                   help="One prefix before every prompt (a system prompt): prefix caching shows up")
    b.text_input("Tokenizer (optional)", key="l_tokenizer",
                 help="tokenizer.json or model directory; default: the served model's own")
    st.markdown("**SLOs for goodput** (0 = not set)")
    x, y, z = st.columns(3)
    x.number_input("TTFT ms", min_value=0.0, step=50.0, key="l_slo_ttft_ms")
    y.number_input("TPOT ms", min_value=0.0, step=5.0, key="l_slo_tpot_ms")
    z.number_input("E2E ms", min_value=0.0, step=500.0, key="l_slo_e2e_ms")
    with st.expander("Alerts & remote GPU telemetry", expanded=False):
        st.text_area("Alert thresholds (one RULE=WARNING,CRITICAL per line; 'off' turns one off)", key="l_alerts",
                     placeholder="ttft_p99_ms=150,300\noutput_tok_s=1000,500",
                     help="Defaults: TTFT p99 > 100 / 200 ms, E2E p99 > 10 / 15 s, GPU util < 70% or > 95%, GPU "
                          "memory > 90%, queue depth > 50 / 100, error rate > 1% / 5%, no tok/s floor. Rules: "
                          "ttft_p99_ms e2e_p99_ms output_tok_s gpu_util_low_pct gpu_util_high_pct gpu_mem_pct "
                          "queue_depth error_rate_pct")
        st.text_input("DCGM exporter of the engine's host", key="l_gpu_metrics_url",
                      placeholder="http://gpu-host:9400/metrics",
                      help="GPU telemetry of a remote server (engine 'openai') from its dcgm-exporter")

    st.subheader("Run")
    gspec = gpu_cat.get(ss.get("l_gpu") or "")
    if ss.get("_l_price_for") != ss.get("l_gpu"):  # new GPU choice: catalog price as the new default
        ss["_l_price_for"] = ss.get("l_gpu")
        if gspec is not None:
            ss["l_price"] = float(gspec.price_per_hour)
    _default("l_price", 0.0)
    if ss.get("l_price") is None:
        ss["l_price"] = 0.0
    st.number_input("Price per GPU-hour ($)", min_value=0.0, step=0.1, format="%.2f", key="l_price",
                    help="Default from the GPU catalog; used by the Cost page.")
    st.text_input("Run name", key="l_name", max_chars=200)
    st.text_input("Tags (comma-separated)", key="l_tags")


def _values() -> LaunchValues:
    g = lambda k, default=None: ss.get(f"l_{k}", default)  # noqa: E731
    return LaunchValues(
        recipe=recipe or "",
        engine=engine, model=model or "", dummy_weights=bool(g("dummy_weights", False)) if real else False,
        gpu=g("gpu"), gpu_indices=gpu_indices, gpu_count=int(g("gpu_count", 1)),
        mem_fraction=g("mem_fraction") if engine != "openai" else None, max_seqs=g("max_seqs", 0),
        max_model_len=g("max_model_len", 0), dtype=g("dtype", "auto"), quantization=g("quantization", "none"),
        kv_cache_dtype=g("kv_cache_dtype", "auto"), tp=int(g("tp", 1)), dp=int(g("dp", 1)),
        extra_args=g("extra_args", "") or "", engine_cmd=(g("engine_cmd", "") or "") if real else "",
        base_url=g("base_url", "") or "", levels=g("levels", ""), stop_by=g("stop_by", D.stop_by),
        requests=int(g("requests", 0) or 0), duration_s=float(g("duration_s", 30.0)), warmup=int(g("warmup", 0)),
        min_steady_s=float(g("min_steady_s", D.min_steady_s)),
        min_requests_per_user=int(g("min_requests_per_user", D.min_requests_per_user)),
        arrivals=g("arrivals", "closed"), rates=g("rates", "") or "", burstiness=float(g("burstiness", 1.0)),
        ramp_up=g("ramp_up", "auto") or "auto", connect_at_go=bool(g("connect_at_go", False)),
        repeat=int(g("repeat", 1)),
        input_len=g("input_len", ""), output_len=g("output_len", ""), endpoint=g("endpoint", "completions"),
        prompt_format=g("prompt_format", "text"), tokenizer=g("tokenizer", "") or "",
        prefix_len=int(g("prefix_len", 0) or 0),
        slo_ttft_ms=float(g("slo_ttft_ms", 0)), slo_tpot_ms=float(g("slo_tpot_ms", 0)),
        slo_e2e_ms=float(g("slo_e2e_ms", 0)), price=g("price"), name=g("name", "") or "", tags=g("tags", "") or "",
        mode=g("mode", "sweep"), slo_preset=g("slo_preset", D.slo_preset),
        slo_percentile=int(g("slo_percentile", 99)), slo_start=int(g("slo_start", 1) or 1),
        slo_max=int(g("slo_max", 1024) or 1024), alerts=g("alerts", "") or "",
        gpu_metrics_url=g("gpu_metrics_url", "") or "")


values = _values()
problems = form_problems(values)  # every problem at once, in plain words
config = build_run_config(values) if not problems else None
if sim_note is not None and (sim_lines := sim_error_lines(config)):
    sim_note.caption("  \n".join(esc_md(line) for line in sim_lines))
# ------------------------------------------------------------------------------------------------- memory fit
st.subheader("Memory fit")
mspec = model_cat.get(values.model)
if recipe:
    if config is not None:
        st.dataframe(recipe_rows(config), hide_index=True)
        st.caption(f"Planned on {esc_md(config.gpu or 'no GPU named: not planned')} × {config.gpu_count} "
                   "(the Planner page shows the memory of each GPU)."
                   + (" :orange-badge[SIMULATED] instances" if config.simulated else ""))
elif engine == "openai":
    st.caption("The server is already running: its memory is its own business.")
elif mspec is None or not gpu_mem_gb:
    st.caption("Memory fit needs a catalog model and a GPU with known memory."
               + ("" if mspec else " This model is not in the catalog."))
else:
    import shlex

    from bench.memory import batched_tokens_from_args, estimate_fit

    try:
        n_gpus = len(gpu_indices) if gpu_indices else values.gpu_count
        tokens = None
        if config is not None:
            tokens = config.workload.input_len.max + config.workload.output_len.max
        fit = estimate_fit(
            mspec, gpu_mem_gb, n_gpus=n_gpus, tp=values.tp, dp=values.dp, mem_fraction=values.mem_fraction,
            dtype=None if values.dtype == "auto" else values.dtype,
            quantization=None if values.quantization == "none" else values.quantization,
            kv_cache_dtype=None if values.kv_cache_dtype == "auto" else values.kv_cache_dtype,
            max_model_len=values.max_model_len or None, max_seqs=values.max_seqs or None,
            max_concurrency=(int(config.slo_search.max_value) if config.slo_search is not None
                             else max(config.levels)) if config else None, tokens_per_request=tokens,
            max_batched_tokens=batched_tokens_from_args(shlex.split(values.extra_args or "")))
        need_gb = None
        if fit.need_kv_tokens:
            need_gb = fit.weights_gb + fit.overhead_gb + fit.need_kv_tokens * fit.kv_bytes_per_token / 1e9
        title = "Memory per GPU (estimate)" + (" — SIMULATED GPU" if engine == "sim" else "")
        show_chart(charts.memory_bar(fit.segments(), fit.gpu_total_gb, n_gpus, need_gb=need_gb, title=title),
                   key="memfit", filename="memory_fit")
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Weights per GPU", f"{fit.weights_gb:.1f} GB")
        m2.metric("KV cache per GPU", f"{max(0.0, fit.kv_gb):.1f} GB")
        m3.metric("KV capacity (tokens / replica)", f"{fit.kv_tokens:,}")
        m4.metric(f"Max concurrent {fit.max_model_len:,}-token seqs", f"{fit.max_concurrent_full_len:,}")
        for w in fit.warnings:
            st.warning(w)
        if problems:  # no "Fits" for levels like "0,-5": the estimate did not see a valid workload
            st.info("Fix the settings below to check the workload against this memory.")
        elif fit.fits and not fit.warnings:
            st.success(f"Fits: weights, runtime and the largest level's KV cache all fit "
                       f"({fit.max_seqs:,} sequences at once, max_num_seqs).")
    except ValueError as e:
        st.warning(f"Memory estimate unavailable: {esc_md(e)}")

# ------------------------------------------------------------------------------------------------------ start
st.divider()
for problem in problems:
    st.error(esc_md(problem))
start_disabled = bool(problems) or engine_missing
_api = worker_api()
_targets = _api.run_targets() if _api is not None else ["This machine"]
run_on = st.selectbox("Run on", _targets, key="l_run_on", disabled=len(_targets) == 1,
                      help="This machine, or a `melt agent` on a GPU host sharing this history (a PostgreSQL team "
                           "history): the run is queued for it and it runs there; watch it live here.")
if engine in ("vllm", "sglang", "trtllm", "llamacpp"):
    # Melt engines that outlived their runs, still holding GPU memory: named here, ended on request (bench/gpu_holders)
    from bench.gpu_holders import end_orphans, launch_warning

    # cached 10 s (app.ui.common.gpu_holders): this runs on every rerun of the form
    _gpus = config.engine.gpus if config is not None else None
    _held, _ = gpu_holders(to_url(None), tuple(_gpus) if _gpus is not None else None)
    if (_msg := launch_warning(_held)) is not None:
        st.warning(esc_md(_msg))
        if st.button("End the orphaned engines", key="l_end_orphans", icon=":material/delete:"):
            _ended = end_orphans(_held)
            gpu_holders.clear()
            st.success(f"Ended processes {', '.join(map(str, _ended))}." if _ended else "Nothing left to end.")


def _start() -> None:
    runs_api = worker_api()
    if runs_api is not None and config is not None:
        try:
            run_id = runs_api.start_run(config, agent=None if run_on == runs_api.THIS_MACHINE else run_on)
        except Exception as e:  # noqa: BLE001 - show why (DB not writable, worker failed to spawn, ...)
            st.error(f"Could not start the run: {esc_md(e)}")
        else:
            ss["l_last_started"] = run_id
            st.switch_page("views/live.py", query_params={"run": str(run_id)})


with top_bar:
    a, b = st.columns([5, 1], vertical_alignment="center")
    if config is not None and config.slo_search is not None:
        a.caption(f"Ready: {esc_md(ENGINES[engine])} · {esc_md(config.engine.model)} · SLO search: "
                  f"{esc_md(config.slo_search.describe())}, C = {config.slo_search.start:g} to "
                  f"{config.slo_search.max_value:g}. Start here or at the bottom of the form.")
    elif config is not None:
        what = (f"recipe {config.recipe} ({len(config.instances)} instances)" if config.instances
                else f"{ENGINES[engine]} · {config.engine.model}")
        a.caption(f"Ready: {esc_md(what)} · {len(config.levels)} level(s) "
                  f"up to C = {max(config.levels):,}. Start here or at the bottom of the form.")
    else:
        a.caption(f"{len(problems)} setting(s) to fix, listed above the Start button at the bottom.")
    if b.button("Start", type="primary", disabled=start_disabled, key="l_start_top", icon=":material/play_arrow:"):
        _start()
if st.button("Start sweep", type="primary", disabled=start_disabled, key="l_start", icon=":material/play_arrow:"):
    _start()
if engine_missing:
    st.caption(f"Install {ENGINES[engine]} to start (see above), or pick the simulator.")
