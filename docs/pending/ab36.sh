#!/usr/bin/env bash
# Next device calls (thirty-seventh session's plan; no device was lent that session):
#   STAGES="plain order" bash docs/pending/ab36.sh      (~9 min, carry .whl_fi)
#   STAGES="bwdpdl" bash docs/pending/ab36.sh           (~8 min, no carry)
#   STAGES="ncu" bash docs/pending/ab36.sh              (~3 min, carry .whl)
# LIMIT=<s> skips what would not fit. Every build applies the three pending patches
# (ldg_plain, decode_order, bwd_pdl); each is main's code unless its flag or knob says
# otherwise (bwd_pdl is on unless GATEDNORM_BWD_PDL=0: the stages that do not measure it
# set 0).
#  plain  ldg_plain.patch: the kernels' 16-byte loads of read-only data as plain ld.global
#         (LDG.E.128, as FLA's fused_norm_gate issues them: its PTX compiled offline for sm_90,
#         docs/pending/README.md) instead of ld.global.nc (__ldg: LDG.E.128.CONSTANT). The patch
#         routes every such load through vec.cuh ldg16; built with -DGN_LDG_PLAIN
#         (GATEDNORM_NVCC_FLAGS) it is plain, else main's code. Two builds (d: main's loads,
#         p: plain), swapped in for interleaved runs d1 p1 d2 p2: forward on the rows that load
#         with it (the small-block and block-row forward, the decode kernel under graph
#         replay), forward+backward on one; then the CUDA forward tests on the plain build. fng
#         leads our forward by 1-3 % there.
#  order  (carry .whl_fi, ~2 min) decode_order.patch, the add + RMSNorm decode kernel's
#         order, GATEDNORM_DECODE_LATE_TRIGGER / _LATE_WEIGHT (o: main's, t, w, tw)
#         interleaved, beside FlashInfer under graph replay at M = 1 / 64: plain RMSNorm M = 1
#         N = 8192 is 2.02 us here, FlashInfer's 1.88 (it loads the weight after the sum and
#         triggers the next grid after its stores).
#  bwdpdl (~8 min) bwd_pdl.patch: the gated backward kernels and the dw/db reduction launched
#         with programmatic dependent launch (plan.h bwd_pdl), GATEDNORM_BWD_PDL 0 / 1
#         interleaved on forward+backward rows (sweep_n131072 0.794 and qwen3next_prefill 0.80
#         sit at issue 3's bar of 0.80); then the backward CUDA tests and memcheck with it on.
#  ncu    (carry .whl, ~3 min) ours beside fng under Nsight Compute, forward, on
#         sweep_n4096 (our small-block kernel, fng's row kernel) and qwen3next_prefill (our
#         register path, fng's tile kernel): time, DRAM bytes and throughput, L1 / L2 hit rates,
#         occupancy, registers, instructions: where fng's 1-3 % is.
. "$(dirname "$0")/common.sh"
PATCHES="ldg_plain decode_order bwd_pdl"
apply_pending() { for p in $PATCHES; do patch -p1 -s < docs/pending/$p.patch || exit 1; done; }
revert_pending() { for p in $(echo $PATCHES | tr ' ' '\n' | tac); do patch -R -p1 -s < docs/pending/$p.patch; done; }
# The build without the flag (main's code but for the knobs), reused by later stages; $so
# is then the in-place build's library.
d_build() {
  so=$(ls torch_ops/_C*.so 2>/dev/null | head -1)
  if [ -f /tmp/d.so ] && [ -n "$so" ]; then cp /tmp/d.so $so; return; fi
  apply_pending; unset GATEDNORM_NVCC_FLAGS; build; so=$(ls torch_ops/_C*.so | head -1); cp $so /tmp/d.so; revert_pending
}
for st in ${STAGES:-plain}; do case $st in
plain) left 400 plain && { export GATEDNORM_BWD_PDL=0
  F='^(rms_z_4096|rms_noz_4096|sweep_n(1024|4096|8192)|odd_n5000)$'
  B='^rms_z_4096$'; D='^decode_qwen3next$'
  # each variant built once, then swapped in: d1 p1 d2 p2 cost two builds
  d_build; apply_pending; export GATEDNORM_NVCC_FLAGS=-DGN_LDG_PLAIN; build; cp $so /tmp/p.so
  for b in d p; do
    echo "$b: $(cuobjdump -sass /tmp/$b.so 2>/dev/null | grep -oE 'LDG\.E\.128(\.CONSTANT)? ' | sort | uniq -c | tr '\n' ' ')"
  done
  for v in d1 p1 d2 p2; do
    cp /tmp/${v:0:1}.so $so
    bench f$v bf16,fp16 fwd "$F" --providers ours; bench b$v bf16 fwdbwd "$B" --providers ours
    bench g$v bf16 graph "$D" --providers ours; el $v
  done
  cols $OUT/fd1.csv $OUT/fp1.csv $OUT/fd2.csv $OUT/fp2.csv
  cols $OUT/bd1.csv $OUT/bp1.csv $OUT/bd2.csv $OUT/bp2.csv
  cols $OUT/gd1.csv $OUT/gp1.csv $OUT/gd2.csv $OUT/gp2.csv
  cp /tmp/p.so $so  # the plain build's tests
  timeout 90 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k "cuda and (match or decode or strided or block_row)" \
    tests/test_forward.py tests/test_fwd_small.py > $OUT/tp.log 2>&1
  echo "plain build, test_forward + test_fwd_small: exit $? $(tail -1 $OUT/tp.log)"; grep -E "^(FAILED|ERROR)" $OUT/tp.log | head
  unset GATEDNORM_NVCC_FLAGS GATEDNORM_BWD_PDL; revert_pending; el plain; } ;;
ncu) left 150 ncu && [ -d .whl ] && { python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  d_build
  S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section InstructionStats"
  PYTHONPATH=/tmp/site timeout 120 ncu --profile-from-start off --csv $S --metrics dram__bytes_read.sum,dram__bytes_write.sum python3 -m benchmarks.ncu_rows \
    sweep_n4096 qwen3next_prefill --providers ours,fng > $OUT/ncu.csv 2> $OUT/ncu.err
  python3 - $OUT/ncu.csv <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    sys.exit("ncu wrote no metrics: " + open(sys.argv[1].replace(".csv", ".err")).read()[-1500:])
head, body = rows[0], rows[1:]
k, m, v = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value")
seen = {}
for r in body:
    keep = ("Duration", "Throughput", "Hit Rate", "Occupancy", "Registers", "Block Size", "Grid Size",
            "Executed Instructions", "dram__bytes", "Waves Per SM", "Mem Busy", "Max Bandwidth")
    if any(x in r[m] for x in keep):
        seen.setdefault((r[head.index("ID")], r[k][:40]), {})[r[m]] = r[v]
for (i, name), ms in seen.items():
    print(i, name); [print(f"    {a:60} {b}") for a, b in sorted(ms.items())]
PY
  el ncu; } ;;
order) left 150 order && [ -f .whl_fi/requirements.txt ] && { . scripts/flashinfer_env.sh; echo "$FLASHINFER_VERSION"
  d_build; export GATEDNORM_BWD_PDL=0
  R='^(addrms|plainrms)_m(1|64)_n(2048|5120|8192)$'
  for v in o1 t1 w1 tw1 o2 t2 w2 tw2; do
    case $v in t*) export GATEDNORM_DECODE_LATE_TRIGGER=1;; esac
    case $v in *w*) export GATEDNORM_DECODE_LATE_WEIGHT=1;; esac
    bench $v bf16 graph "$R" --providers ours,flashinfer
    unset GATEDNORM_DECODE_LATE_TRIGGER GATEDNORM_DECODE_LATE_WEIGHT; el $v
  done
  python3 -m benchmarks.columns fi1=$OUT/o1.csv:flashinfer o1=$OUT/o1.csv t1=$OUT/t1.csv w1=$OUT/w1.csv tw1=$OUT/tw1.csv \
    fi2=$OUT/o2.csv:flashinfer o2=$OUT/o2.csv t2=$OUT/t2.csv w2=$OUT/w2.csv tw2=$OUT/tw2.csv | grep -v "^$"
  unset GATEDNORM_BWD_PDL; el order; } ;;
bwdpdl) left 300 bwdpdl && { d_build
  B='^(qwen3next_prefill|sweep_n(128|1024|131072)|rms_z_4096|odd_n5000|mamba2_g1024)$'
  for v in k0 k1 j0 j1; do
    GATEDNORM_BWD_PDL=${v:1} bench $v bf16 fwdbwd "$B" --providers ours; el $v
  done
  cols $OUT/k0.csv $OUT/k1.csv $OUT/j0.csv $OUT/j1.csv
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_backward.py tests/test_add_rms_norm.py \
    > $OUT/tb.log 2>&1
  echo "bwd_pdl on, test_backward + test_add_rms_norm: exit $? $(tail -1 $OUT/tb.log)"; grep -E "^(FAILED|ERROR)" $OUT/tb.log | head
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 python3 -m pytest -q -p no:cacheprovider \
    -m "not slow" -k "cuda and (kernel_paths or partials or wide or 131072 or deterministic)" tests/test_backward.py > $OUT/mb.log 2>&1
  echo "memcheck: exit $? $(grep -E 'passed|failed' $OUT/mb.log | tail -1)"; grep -m5 -E "ERROR SUMMARY|Invalid" $OUT/mb.log
  el bwdpdl; } ;;
esac; done
