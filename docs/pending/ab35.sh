#!/usr/bin/env bash
# Next device calls (carry .whl for the peers stage; LIMIT=<s> skips what would not fit).
#  rule   the landed bwd_rms_teams rule in its final form (16-bit gated RMSNorm
#         groups of 2049-4096 columns in teams of up to 512 threads at 8 elements), whose GPU
#         run the thirty-fourth session could not get: its plan tests and the backward CUDA tests.
#  lean   bwd_lean_teams.patch: the lean copy in the 8-element kernels for teams of more than
#         256 threads (the rule's teams): test_bwd_lean on CUDA, memcheck over the 4096
#         reference cases, GATEDNORM_BWD_LEAN 1 / 0 interleaved on the gated 4096 rows; and
#         GATEDNORM_BWD_RMS_TEAMS=2 (every RMSNorm group: no gate, fp32) against 1, the lean
#         copy on, where the rule without it lost (rms_noz_4096 bf16 0.944 -> 0.845, fp32 -0.5 %).
#  zearly fwd_small_z_early.patch: the small-block forward loads z with x, before the sum
#         (more bytes in flight a block; fng is ahead by 1-2 % on these rows): its tests
#         and memcheck under GATEDNORM_FWD_Z_EARLY=1, then 1 / 0 interleaved, forward.
#  peers  ours against FLA's fused_norm_gate on the rows the session changed (needs .whl).
#  rows   fwd_many_rows.patch: the decode kernel past one wave of blocks (fwd_rows: groups of one
#         vector a thread in teams of <= 32, N <= 256 at 16-bit, where fng leads by ~1 %: every
#         load issued at once, no ring): its tests and memcheck, then GATEDNORM_FWD_DECODE_GRID
#         1 (one (row, group) a team) / 0 (main) / 2 (two a team) interleaved, forward and
#         forward+backward; then ours beside fng on those rows (with .whl).
# Three calls: `bash docs/pending/ab35.sh` (rule lean, ~7 min), then
# `STAGES="zearly peers" bash docs/pending/ab35.sh` (~6 min, carry .whl), then
# `STAGES=rows bash docs/pending/ab35.sh` (~8 min; with .whl carried it also runs fng beside it).
. "$(dirname "$0")/common.sh"
build
for st in ${STAGES:-rule lean}; do case $st in
rule) timeout 60 python3 -m pytest -q -p no:cacheprovider -k "cuda and (rms_teams or lean or 4096 or 3000)" \
    tests/test_backward.py tests/test_bwd_lean.py 2>&1 | grep -E "passed|failed|^FAILED|^ERROR" | head
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_backward.py > $OUT/tb.log 2>&1
  echo "test_backward: exit $? $(tail -1 $OUT/tb.log)"; grep -E "^(FAILED|ERROR)" $OUT/tb.log | head; el rule ;;
lean) left 240 lean && { patch -p1 -s < docs/pending/bwd_lean_teams.patch || exit 1; build
  timeout 60 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_bwd_lean.py 2>&1 | grep -E "passed|failed|^FAILED" | head
  timeout 60 compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 python3 -m pytest -q -p no:cacheprovider \
    -k "cuda and grads_match and 4096" tests/test_backward.py > $OUT/san.log 2>&1
  echo "memcheck: exit $? $(grep -E 'passed|failed' $OUT/san.log | tail -1)"; grep -m1 "ERROR SUMMARY" $OUT/san.log; el lean-tests
  G='^(rms_z_4096|sigmoid_4096|sweep_n4096)$'
  for k in 1 0 1 0; do GATEDNORM_BWD_LEAN=$k bench ln$k.$RANDOM bf16,fp16 fwdbwd "$G" --providers ours; done
  cols $OUT/ln1.*.csv $OUT/ln0.*.csv
  N='^(rms_noz_4096|rms_z_4096|sweep_n4096)$'
  for k in 2 1 2 1; do GATEDNORM_BWD_RMS_TEAMS=$k bench rt$k.$RANDOM bf16,fp32 fwdbwd "$N" --providers ours; done
  cols $OUT/rt2.*.csv $OUT/rt1.*.csv; el lean
  patch -R -p1 -s < docs/pending/bwd_lean_teams.patch; } ;;
zearly) left 200 zearly && { patch -p1 -s < docs/pending/fwd_small_z_early.patch || exit 1; build
  GATEDNORM_FWD_Z_EARLY=1 timeout 60 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_fwd_small.py 2>&1 | grep -E "passed|failed|^FAILED" | head
  GATEDNORM_FWD_Z_EARLY=1 timeout 60 compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 python3 -m pytest -q \
    -p no:cacheprovider -k "cuda and match" tests/test_fwd_small.py > $OUT/san_ze.log 2>&1
  echo "memcheck: exit $? $(grep -E 'passed|failed' $OUT/san_ze.log | tail -1)"; grep -m1 "ERROR SUMMARY" $OUT/san_ze.log
  Z='^(sweep_n(1024|2048|4096|8192)|rms_z_4096|sigmoid_4096|odd_n5000)$'
  for k in 1 0 1 0; do GATEDNORM_FWD_Z_EARLY=$k bench ze$k.$RANDOM bf16,fp16,fp32 fwd "$Z" --providers ours; done
  cols $OUT/ze1.*.csv $OUT/ze0.*.csv; el zearly
  patch -R -p1 -s < docs/pending/fwd_small_z_early.patch; } ;;
peers) left 150 peers && [ -d .whl ] && { python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  build; PYTHONPATH=/tmp/site bench peers bf16 fwd,fwdbwd '^(rms_z_4096|sweep_n4096|odd_n5000|odd_n1200|qwen3next_prefill)$' --providers ours,fng
  grep -v "^WARNING" $OUT/peers.log | tail -30; el peers; } ;;
rows) left 200 rows && { patch -p1 -s < docs/pending/fwd_many_rows.patch || exit 1; build
  timeout 60 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_fwd_rows.py 2>&1 | grep -E "passed|failed|^FAILED" | head
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_forward.py > $OUT/tf.log 2>&1
  echo "test_forward: exit $? $(tail -1 $OUT/tf.log)"; grep -E "^(FAILED|ERROR)" $OUT/tf.log | head
  timeout 90 compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 python3 -m pytest -q -p no:cacheprovider \
    -k "cuda and (match or strided)" tests/test_fwd_rows.py > $OUT/san_rows.log 2>&1
  echo "memcheck: exit $? $(grep -E 'passed|failed' $OUT/san_rows.log | tail -1)"; grep -m1 "ERROR SUMMARY" $OUT/san_rows.log; el rows-tests
  R='^(qwen3next_prefill|sweep_n(64|128|256)|decode_qwen3next|decode_m32)$'
  for k in 1 0 2 1 0 2; do GATEDNORM_FWD_DECODE_GRID=$k bench dg$k.$RANDOM bf16,fp16,fp32 fwd,fwdbwd "$R" --providers ours; done
  cols $OUT/dg1.*.csv $OUT/dg0.*.csv $OUT/dg2.*.csv; el rows
  [ -d .whl ] && left 60 rows-peers && { python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site bench rpeers bf16 fwd '^(qwen3next_prefill|sweep_n(64|128|256))$' --providers ours,fng
    grep -v "^WARNING" $OUT/rpeers.log | tail -12; el rows-peers; }
  patch -R -p1 -s < docs/pending/fwd_many_rows.patch; } ;;
esac; done
