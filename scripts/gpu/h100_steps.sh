#!/usr/bin/env bash
# The H100/H200 A/B (issues: real engines, numbers you can trust) as one short command per device call, so the calls go back to back (the lent
# machine is given back 30 s after a call). Run from the repo root on the device machine; results land in $OUT.
#   stage N            calls 1-6: carry .gpu/p0N (vLLM bundle, ../shared/device/README.md), copy it to /tmp/stage
#                      (a call carries at most 64 MiB with the work tree, ~11.4 MB now: the bundle's pieces are re-split
#                      to 50,000,000 bytes, p00-p05 + a 27 MB p06, with `split -b 50000000 -d -a 2` on their concatenation)
#   serve [ARGS]       carry the last piece (.gpu/p06) + .whl: install vLLM + Melt's wheels, launch vLLM through Melt
#                      (left running). Every step that installs copies whichever .gpu/pNN it was given first.
#   cmp LEVELS PAIRS [TIMEOUT_S] [TOOLS]
#                      Melt vs vllm bench serve against that server (scripts/gpu/vllm_compare.py compare --attach)
#                      CALIBRATE=1 first runs ./melt calibrate-host (pinned to CPU 1, a server CPU, while the server is
#                      idle) into $OUT/host_profile.yaml: the frontend micro-costs of the host these runs measured;
#                      PER_USER=N sends N requests per user at every level (default 2 per user, at least 100)
#   kvprobe MODEL FRACTION MBT[,MBT..] [QUANT] [TIMEOUT_S]
#                      carry the last piece + .whl (installs them if needed): vLLM's KV-cache sizing of MODEL (dummy weights,
#                      max model len 4096) at each --max-num-batched-tokens, each start stopped at its KV line
#                      (scripts/gpu/kv_probe.py); kv_facts.txt and the engine logs to $OUT (issue #12's runtime term)
#   stop               stop it; GPU memory back to the pre-launch baseline?
#   blitz [MINUTES] [REPEAT] [SINGLE_MIN] [TIMEOUT_S]
#                      carry the last piece + .whl (installs them if /tmp/site has no vLLM yet): one `bench blitz` that launches
#                      vLLM itself (~220 s start), searches the saturating concurrency, measures REPEAT (2) levels of
#                      MINUTES (1) there on that one server (the agreement check), then the single-stream method (HF
#                      generate, batch 1) for SINGLE_MIN (0.5; 0 = skip); result JSON, log and DB to $OUT. Fits one
#                      600 s call with the defaults. BLITZ_START (32) and BLITZ_SEARCH_S (6): first search level and its
#                      seconds of steady state. The log goes to $OUT as it is written (a call cut short still has it).
#   recipe NAME LEVELS [TIMEOUT_S] [SWEEP FLAGS...]
#                      after serve + stop (vLLM installed, no server left): ./melt sweep --recipe NAME (a deployment of
#                      several instances, started one after another, weighted / round-robin traffic) with dummy weights
#                      through `python3 -m vllm.entrypoints.cli.main`; the DB, the JSON run document and every
#                      instance's engine log land in $OUT. E.g. recipe h200-qwen3-0.6b-two-replicas 512,1024 540 --duration 30
#                      or recipe dwani-llm-pair 10,100 540 --duration 30
#   vllm NAME LEVELS [TIMEOUT_S] [SWEEP FLAGS...]
#                      carry the last piece + .whl (installs them if /tmp/site has no vLLM yet): one ./melt sweep --engine vllm
#                      (dummy weights, 512 in / 128 out) into the engines DB /tmp/res/engines/melt.db that the sglang step
#                      shares, so `./melt compare-engines` reads both; e.g. vllm llama8b-bf16 1,16,128,512 540 --model
#                      meta-llama/Llama-3.1-8B-Instruct --duration 20 (add --quantization fp8 for the fp8 run). The DB, the
#                      JSON and the engine log land in $OUT; CALIBRATE=1 also runs ./melt calibrate-host on this host
#   sgstage NNN        SGLang (issue #16), calls 1..K: carry .gpu/sglang/pNNN (scripts/gpu/sglang_bundle.sh), copied to
#                      /tmp/sgstage; K = the bundle's piece count (27 for 0.5.14: ~12 s a call, send them back to back)
#   sglang LEVELS [TIMEOUT_S] [SWEEP FLAGS...]
#                      carry .whl: unpack + install the staged SGLang into /tmp/sgsite (no vLLM on that path), then
#                      ./melt sweep --engine sglang (dummy Qwen3-0.6B unless --model) at LEVELS, 512 in / 128 out;
#                      into the engines DB the vllm step shares (SG_NAME names the run, default qwen3-0.6b); DB, JSON,
#                      log and the engine log to $OUT; GPU memory checked back at 0 after
# Server on CPUs 0-9, clients on 10-15: the two never compete for a core.
set -uo pipefail
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
step=${1:?step}
srv=(--server-cpus 0-9); cli=(--client-cpus 10-15)
command -v taskset >/dev/null || { echo "no taskset: server and clients unpinned"; srv=(); cli=(); }
# the bundle's last piece, carried by the call that installs (any .gpu/pNN present: a call holds only what it carries)
last_piece() { mkdir -p /tmp/stage && cp .gpu/p*/part.* /tmp/stage/ && ls /tmp/stage; }
# vLLM from the staged bundle (stage 0..5 before) and Melt's wheels, once per warm machine
install_vllm() {
  python3 -c "import vllm" 2>/dev/null && return 0
  last_piece && cat /tmp/stage/part.* | tar -C /tmp -x &&
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/wheels/*.whl .whl/*.whl
}
# the engines DB (every vllm / sglang step's runs, for compare-engines) and this step's engine logs, to $OUT
engines_out() {
  [ -f "$1/melt.db" ] && python3 -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('vacuum into ?', (sys.argv[2],))" \
    "$1/melt.db" "/tmp/res/engines_$2.db" && gzip -c "/tmp/res/engines_$2.db" > "$OUT/melt_engines.db.gz"
  (cd "$1/home_$2" && find . -name engine.log | tar -czf "$OUT/engine_logs_$2.tgz" -T -)
  nvidia-smi --query-gpu=name,memory.used --format=csv
}
case "$step" in
  stage)
    mkdir -p /tmp/stage && cp ".gpu/p0$2"/* /tmp/stage/ && ls -la /tmp/stage ;;
  serve)
    last_piece && cat /tmp/stage/part.* | tar -C /tmp -x &&
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/wheels/*.whl .whl/*.whl \
      || exit 1
    nvidia-smi --query-gpu=name,memory.used,clocks.max.sm --format=csv; lscpu -e=CPU,CORE,SOCKET,NODE | head -20
    cat /proc/sys/net/core/somaxconn
    python3 scripts/gpu/vllm_compare.py serve "${srv[@]}" --out "$OUT" "${@:2}"
    # the KV-cache size vLLM computed (issue #12: the planner's prediction against it)
    grep -E "KV cache|Maximum concurrency|model weights took|Available KV" /tmp/melt_vllm_server/engine.log | tail -8 ;;
  cmp)
    name=c${2//,/_}; res=/tmp/res/$name; mkdir -p "$res"
    if [ "${CALIBRATE:-0}" = 1 ]; then
      taskset -c 1 python3 -m bench calibrate-host --model Qwen/Qwen3-0.6B -o "$OUT/host_profile.yaml" > "$OUT/calibrate.txt" 2>&1
      tail -12 "$OUT/calibrate.txt"; lscpu | grep -E "Model name|MHz" >> "$OUT/calibrate.txt"
    fi
    timeout "${4:-540}" python3 scripts/gpu/vllm_compare.py compare --attach "${cli[@]}" --levels "$2" \
      --pairs "$3" --tools "${5:-melt,vllm}" ${PER_USER:+--per-user "$PER_USER"} --out "$res"
    if [ -f "$res/compare_$name.json" ]; then cp "$res/compare_$name.json" "$res/compare_$name.md" "$OUT"/
    else cp "$res/compare_$name.partial.json" "$OUT"/; fi  # cut by the timeout: what it measured so far
    tar -C "$res" -czf "$OUT/logs_$name.tgz" --exclude='*.json' --exclude='melt.db*' .
    # Melt's own rows (every request's send time, TTFT, E2E, tokens): the steady-state figures are computed from them
    [ -f "$res/melt.db" ] && python3 -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('vacuum into ?', (sys.argv[2],))" "$res/melt.db" "/tmp/res/$name.db" && gzip -c "/tmp/res/$name.db" > "$OUT/melt_$name.db.gz" ;;
  blitz)
    install_vllm || exit 1
    nvidia-smi --query-gpu=name,driver_version,memory.used,clocks.max.sm,power.limit --format=csv
    # a fresh directory, DB and Melt home per Blitz: a second Blitz on a warm machine is its own run 1
    res=$(mktemp -d /tmp/res_blitz_XXXX); ss=()
    [ "${4:-0.5}" != 0 ] && ss=(--single-stream-python python3 --single-stream-minutes "${4:-0.5}")
    MELT_HOME="$res/home" timeout "${5:-570}" python3 -m bench --db "$res/melt.db" blitz --engine vllm \
      --engine-cmd "python3 -m vllm.entrypoints.cli.main" --engine-arg=--no-enable-prefix-caching \
      --minutes "${2:-1}" --repeat "${3:-2}" --start-concurrency "${BLITZ_START:-32}" \
      --search-steady "${BLITZ_SEARCH_S:-6}" "${ss[@]}" --json > "$res/blitz.json" 2> >(tee "$OUT/blitz.log" > "$res/blitz.log")
    echo "blitz exit $?"; sleep 1
    tail -40 "$res/blitz.log"
    # cut by the timeout: the run's stored document instead of the CLI's
    [ -s "$res/blitz.json" ] || MELT_HOME="$res/home" python3 -m bench --db "$res/melt.db" show 1 --json > "$res/blitz.json"
    cp "$res/blitz.json" "$OUT"/
    python3 -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('vacuum into ?', (sys.argv[2],))" \
      "$res/melt.db" "$res/blitz.db" && gzip -c "$res/blitz.db" > "$OUT/melt_blitz.db.gz"
    find "$res/home" -name engine.log -exec cp {} "$OUT/blitz_engine.log" \; ; nvidia-smi ;;
  recipe)
    res=/tmp/res/recipe_$2; mkdir -p "$res"; nvidia-smi --query-gpu=name,memory.used --format=csv
    MELT_HOME="$res/home" timeout "${4:-540}" python3 -m bench --db "$res/melt.db" sweep --recipe "$2" --dummy-weights \
      --engine-cmd "python3 -m vllm.entrypoints.cli.main" --levels "$3" --input-len 512 --output-len 128 --json \
      --name "recipe $2" "${@:5}" > "$res/sweep.json" 2> "$res/sweep.log"
    echo "sweep rc=$?"; tail -60 "$res/sweep.log"
    cp "$res/sweep.json" "$res/sweep.log" "$OUT"/
    [ -f "$res/melt.db" ] && python3 -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('vacuum into ?', (sys.argv[2],))" "$res/melt.db" "/tmp/res/recipe_$2.db" && gzip -c "/tmp/res/recipe_$2.db" > "$OUT/melt_recipe_$2.db.gz"
    (cd "$res/home" && find . -name engine.log | tar -czf "$OUT/engine_logs_recipe_$2.tgz" -T -)
    nvidia-smi --query-gpu=name,memory.used --format=csv ;;
  sgstage)
    mkdir -p /tmp/sgstage && cp ".gpu/sglang/p$2"/* /tmp/sgstage/ && ls /tmp/sgstage | wc -l ;;
  sglang)
    export PYTHONPATH=/tmp/sgsite PATH=/tmp/sgsite/bin:$PATH
    if ! python3 -c "import sglang" 2>/dev/null; then
      mkdir -p /tmp/sg && cat /tmp/sgstage/part.* | tar -C /tmp/sg -x &&
        for w in .whl/*.whl; do n=$(basename "$w" | cut -d- -f1); ls /tmp/sg/wheels/"$n"-* >/dev/null 2>&1 || cp "$w" /tmp/sg/wheels/; done &&
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sgsite /tmp/sg/wheels/*.whl \
        || exit 1
    fi
    python3 -c "import sglang, torch; print('sglang', sglang.__version__, 'torch', torch.__version__)"
    res=/tmp/res/engines; name=sglang_${SG_NAME:-qwen3-0.6b}; mkdir -p "$res"
    nvidia-smi --query-gpu=name,memory.used --format=csv
    MELT_HOME="$res/home_$name" timeout "${3:-540}" python3 -m bench --db "$res/melt.db" sweep --engine sglang \
      --engine-cmd "python3 -m sglang.launch_server" --model Qwen/Qwen3-0.6B --dummy-weights --levels "$2" \
      --input-len 512 --output-len 128 --json --name "$name $2" "${@:4}" > "$res/$name.json" 2> "$res/$name.log"
    echo "sweep rc=$?"; tail -40 "$res/$name.log"
    cp "$res/$name.json" "$res/$name.log" "$OUT"/
    engines_out "$res" "$name" ;;
  vllm)
    install_vllm || exit 1
    res=/tmp/res/engines; name=vllm_$2; mkdir -p "$res"
    nvidia-smi --query-gpu=name,driver_version,memory.used,power.limit --format=csv
    MELT_HOME="$res/home_$name" timeout "${4:-540}" python3 -m bench --db "$res/melt.db" sweep --engine vllm \
      --engine-cmd "python3 -m vllm.entrypoints.cli.main" --dummy-weights --levels "$3" --input-len 512 \
      --output-len 128 --json --name "$name $3" "${@:5}" > "$res/$name.json" 2> "$res/$name.log"
    echo "sweep rc=$?"; tail -40 "$res/$name.log"
    cp "$res/$name.json" "$res/$name.log" "$OUT"/
    if [ "${CALIBRATE:-0}" = 1 ]; then  # issue #13: this host's frontend costs, in the same lease as its real runs
      python3 -m bench calibrate-host --model Qwen/Qwen3-0.6B -o "$OUT/host_profile.yaml" > "$OUT/calibrate.txt" 2>&1
      tail -30 "$OUT/calibrate.txt"; lscpu | grep -E "Model name|MHz" >> "$OUT/calibrate.txt"
    fi
    engines_out "$res" "$name" ;;
  kvprobe)
    install_vllm || exit 1
    nvidia-smi --query-gpu=name,memory.used --format=csv
    q=(); [ -n "${5:-}" ] && q=(--quantization "$5")
    timeout "${6:-560}" python3 scripts/gpu/kv_probe.py --model "$2" --mem-fraction "$3" --mbt "$4" "${q[@]}" \
      --out /tmp/res/kvprobe
    cp /tmp/res/kvprobe/kv_facts.txt /tmp/res/kvprobe/engine_*.log "$OUT"/
    nvidia-smi --query-gpu=name,memory.used --format=csv ;;
  stop)
    python3 scripts/gpu/vllm_compare.py stop --out "$OUT"
    cp /tmp/melt_vllm_server/engine.log "$OUT"/ ; nvidia-smi ;;
esac
