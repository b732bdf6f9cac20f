#!/usr/bin/env bash
# The next accelerator session's work (#5, #6), in stages that each fit one 10-minute device call:
#   bash ablations/gpu-session.sh check    # 14 packed proxy processes with CUDA graphs, time-sliced and under MPS;
#                                          # GPU-only tests; one proxy run's speed eager/compiled/graphs; 14 runs in
#                                          # one process (graphs on streams)
#   bash ablations/gpu-session.sh round4   # one proxy epoch with CUDA graphs in 2 packed processes (under MPS; if
#                                          # that fails, once more time-sliced; stops the stage if that fails too),
#                                          # then configs/calibration/round4.yaml, 14 packed (one variant's 14 cells
#                                          # at once)
#   bash ablations/gpu-session.sh grid [KEY=VALUE ...]
#                                          # every cell of Tables 1–6 under proxy.yaml (with these overrides: a
#                                          # calibration variant's list, e.g. round4's, before proxy.yaml adopts it;
#                                          # that round's records of the same cells are copied in, not trained),
#                                          # then 2 more seeds of the noise cells (lab.fidelity.NOISE_SPECS), then
#                                          # `lab fidelity`
#   bash ablations/gpu-session.sh bench    # #6 (ViT-B/16): the variants below or near 1.00× LayerNorm compiled,
#                                          # timed in 5 interleaved rounds; eager bf16 and fp32 with the generated
#                                          # kernels, now specialised to the training shape
#   bash ablations/gpu-session.sh mfu      # #6: LayerNorm and Derf compiled with inductor's autotuning (MFU goal)
#   bash ablations/gpu-session.sh fp32     # #6: six Section-3 variants compiled in fp32 (Derf's is measured)
# round4 and grid pack their runs under NVIDIA MPS (lab.mps: their kernels share the GPU at once instead of taking
# turns; the records' "pool" says whether they did); MPS=0 packs them time-sliced, as rounds 1-3 ran.
# One stage a device call, with STAGE_S at most the call's limit less a minute: the call's limit is the session's device
# time left, less the machine's start (minutes), when that is below timeout_s; a stage the device cuts off loses its
# last log lines and archive (the snapshots below keep what was written 30 s before).
# A stage stops itself at STAGE_S seconds (default 540; its sweeps start no cell that would not finish by then),
# writes $OUT/STAGE.log (ending with the last lines of each cell it left unfinished: lab.results.log_path), and
# packs what it wrote under ablations/results/ (run checkpoints aside, logs included) into $OUT/STAGE.tgz, every
# SNAPSHOT_S seconds (default 30) and at the end: a call cut off by the device's own limit (a slow machine start
# leaves less of the session's 15 minutes) still brings back every cell finished 30 s before.
# Unpack that in the repo root before the next call: the records travel back with the working tree, so the same stage
# run again trains only what is missing.
# The device has torch and timm but not this project installed: the checkout goes on PYTHONPATH (the device's own notes).
set -uo pipefail
stage=${1:-}
case "$stage" in
  check|round4|grid|bench|mfu|fp32) ;;
  *) echo "gpu-session.sh: unknown stage '$stage': choose check, round4, grid, bench, mfu or fp32" >&2; exit 2 ;;
esac
sets=()
for kv in "${@:2}"; do
  [[ $stage == grid && $kv == *=* ]] || { echo "gpu-session.sh: '$kv': only grid takes arguments, KEY=VALUE" >&2; exit 2; }
  sets+=(--set "$kv")
done
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[[ -d /usr/local/nvidia/bin ]] && export PATH=$PATH:/usr/local/nvidia/bin    # where containers mount the driver's tools
mps=(--mps)
[[ ${MPS:-1} == 0 ]] && mps=()
started=$(date +%s)
touch "$out/.start"

remaining() {   # seconds left of STAGE_S
  echo $(( ${STAGE_S:-540} - ($(date +%s) - started) ))
}

deadline() {   # what remains less a margin for writing the last records (at least 1): the sweeps' --deadline
  local s=$(( $(remaining) - 15 ))
  echo $(( s > 0 ? s : 1 ))
}

step() {   # one command within what remains of STAGE_S; the stage fails if any step does (124: out of time)
  local left rc=0
  left=$(remaining)
  echo "== $* (${left} s left)"
  (( left > 0 )) || { failed=124; echo "== skipped: out of time"; return 124; }
  timeout -k 20 "$left" "$@" || { rc=$?; failed=$rc; echo "== exit $rc: $*"; }
  return "$rc"
}

unfinished() {   # the last lines of every cell this stage started and did not finish: how far, how fast, why
  local log
  find ablations/results -name '*.log' -newer "$out/.start" | sort | while read -r log; do
    [[ -e ${log%.log}.json ]] || { echo "== unfinished: $log"; tail -n 3 "$log"; }
  done
}

# One proxy epoch with CUDA graphs in 2 packed processes (args: --mps or none), in about a minute; PREFLIGHT_S (180)
# seconds at most (then lab unwinds: it stops its pool and MPS daemon; -k: 10 s more), so one that hangs under MPS
# leaves time to try again. Its output holds tqdm's carriage returns: a line's start is after the last one.
preflight() {
  rm -rf "${TMPDIR:-/tmp}/preflight"
  step timeout -k 10 "${PREFLIGHT_S:-180}" python3 -m lab sweep table1 --protocol proxy --specs erf --seeds 0,1 --jobs 2 \
    "$@" --results "${TMPDIR:-/tmp}/preflight" --set epochs=1 --set data.train_size=10000 --set optim.batch_size=256 \
    --set compile=true --set compile_mode=reduce-overhead > >(tee "$out/preflight.out") 2>&1
  local rc=$?
  wait $!     # tee has written every line
  return "$rc"
}

run_stage() {
  failed=0
  local differ   # why the records' commit says +dirty, if it does (lab.results.git_commit)
  differ=$(git -c core.fileMode=false status --porcelain --untracked-files=no 2>/dev/null | head -5 | tr '\n' ' ')
  echo "== commit $(git rev-parse --short HEAD 2>/dev/null); tracked files that differ from it: ${differ:-none}"
  case "$stage" in
    check)    # most wanted first: 14 graphed proxy runs time-sliced against the same under MPS
      step python3 -m lab bench --modes "" --packing 14 --packing-mode compiled-graphs
      step python3 -m lab bench --modes "" --packing 1,14 --packing-mode compiled-graphs --mps
      step python3 -m pytest -q -p no:cacheprovider -k "(generated or gpu) and not readme" tests/test_layers.py \
        tests/test_train.py tests/test_bench.py    # (the README lists the committed bench records, not today's)
      step python3 -m lab bench --proxy --norms erf --modes eager,compiled,compiled-graphs --dtypes bf16
      step python3 -m lab bench --modes "" --packing 1,14 --packing-mode graphed-streams ;;
    round4)   # a preflight that fails or hangs under MPS is tried once more time-sliced: the call is not lost to MPS
      { preflight "${mps[@]}" ||
        { (( ${#mps[@]} )) && echo "== the preflight failed under MPS: once more time-sliced, as MPS=0 would" &&
          mps=() && preflight && failed=0; }; } &&
      { ! grep -q "^MPS: .*the runs time-slice the GPU" < <(tr '\r' '\n' < "$out/preflight.out") ||
        { echo "== MPS did not start in the preflight: the round runs time-sliced, as MPS=0 would"; mps=(); }; } &&
      step python3 -m lab calibrate configs/calibration/round4.yaml --jobs 14 "${mps[@]}" --deadline "$(deadline)" ;;
    grid)
      step python3 -m lab sweep all --protocol proxy --jobs 14 "${mps[@]}" --results ablations/results/proxy \
        --reuse ablations/results/calibration --deadline "$(deadline)" "${sets[@]}"
      step python3 -m lab sweep all --protocol proxy --jobs 14 "${mps[@]}" --results ablations/results/proxy \
        --reuse ablations/results/calibration --seeds 1,2 --specs layernorm,erf,tanh,arctan,isru \
        --deadline "$(deadline)" "${sets[@]}"
      python3 -m lab fidelity --results ablations/results/proxy --protocol proxy ;;
    bench)
      step python3 -m lab bench --modes compiled --dtypes bf16 --rounds 5 --steps 20 \
        --norms "derf,sin,arcsinh|clip=1,erf|blend=0.1,erf"
      step python3 -m lab bench --modes eager --dtypes bf16,fp32 --norms "derf,sin,erf,arcsinh|clip=1" --steps 20 ;;
    mfu)
      step python3 -m lab bench --modes compiled-autotune --dtypes bf16 --norms derf --steps 25 ;;
    fp32)
      step python3 -m lab bench --modes compiled --dtypes fp32 --steps 10 --warmup 3 \
        --norms "sin,arcsinh|clip=1,erf|blend=0.1,erf|flat=0.5,erf|hshift=0.5,erf|neg" ;;
  esac
  unfinished
  return "$failed"
}

snapshot() {   # $OUT/STAGE.tgz: what the stage has written so far (tar's exit 1: a log grew while read, still whole)
  find ablations/results -type f -newer "$out/.start" ! -name '*.tmp' ! -name '*.ckpt' ! -name .cells.lock > "$out/new-files.txt"
  tar czf "$out/$stage.tgz.part" --warning=no-file-changed -T "$out/new-files.txt"
  (( $? <= 1 )) && mv "$out/$stage.tgz.part" "$out/$stage.tgz"
}

( trap 'kill $! 2>/dev/null; exit 0' TERM   # at once while it sleeps; after its tar if it is packing
  while kill -0 $$ 2>/dev/null; do sleep "${SNAPSHOT_S:-30}" >/dev/null 2>&1 & wait $!; snapshot; done ) &
snapshots=$!
run_stage 2>&1 | tee "$out/$stage.log"
rc=${PIPESTATUS[0]}
kill "$snapshots"
wait "$snapshots"
for pipe in "${TMPDIR:-/tmp}"/lab-mps-*/; do   # a daemon whose lab command was killed at the limit (lab stops its own)
  [[ -d $pipe ]] || continue
  echo quit | CUDA_MPS_PIPE_DIRECTORY=$pipe timeout 30 nvidia-cuda-mps-control >/dev/null 2>&1 && rm -rf "$pipe"
done
snapshot
rm -f "$out/.start"
echo "$stage: exit $rc, $(wc -l < "$out/new-files.txt") files in $out/$stage.tgz"
exit "$rc"
