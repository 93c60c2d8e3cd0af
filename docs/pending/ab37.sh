#!/usr/bin/env bash
# Next device call: `bash docs/pending/ab37.sh` (prefetch, ~4 min, no carry).
#  prefetch  prefetch_l2.patch: the decode kernels (add + RMSNorm / plain RMSNorm a block a
#            row, the gated decode kernel) ask L2 for their rows (cp.async.bulk.prefetch.L2)
#            before griddepcontrol.wait, so that under programmatic dependent launch the rows'
#            DRAM latency overlaps the previous grid. One build; GATEDNORM_PREFETCH_L2=0 / 1
#            interleaved (off1 on1 off2 on2), GPU time per CUDA-graph replay on the decode rows
#            (issue 4: addrms_m64_n8192 3.41 us against a target of 3; DESIGN: the gated decode
#            1.6 us against our 2.0); FlashInfer beside the last; then the CUDA tests of the
#            decode kernels and memcheck on them.
. "$(dirname "$0")/common.sh"
for st in ${STAGES:-prefetch}; do case $st in
prefetch) left 240 prefetch && { patch -p1 -s < docs/pending/prefetch_l2.patch || exit 1
  build
  D='^(decode_qwen3next|decode_m32|addrms_m(1|64)_n(2048|4096|5120|8192)|plainrms_m(1|64)_n(2048|8192))$'
  for v in off1 on1 off2 on2; do
    pv=ours; [ $v = on2 ] && pv=ours,flashinfer
    GATEDNORM_PREFETCH_L2=$([ ${v:0:2} = on ] && echo 1 || echo 0) bench g$v bf16 graph "$D" --providers $pv; el $v
  done
  cols $OUT/goff1.csv $OUT/gon1.csv $OUT/goff2.csv $OUT/gon2.csv
  grep -h ",flashinfer,graph," $OUT/gon2.csv | cut -d, -f1,11 | tr '\n' ' '; echo
  timeout 200 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k cuda tests/test_add_rms_norm.py \
    tests/test_forward.py > $OUT/tf.log 2>&1
  echo "prefetch build, test_add_rms_norm + test_forward CUDA: exit $? $(tail -1 $OUT/tf.log)"; grep -E "^(FAILED|ERROR)" $OUT/tf.log | head
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider -m "not slow" \
    -k "cuda and (decode or paths or graph)" tests/test_add_rms_norm.py tests/test_forward.py > $OUT/mc.log 2>&1
  echo "memcheck (decode, paths, graph): exit $? $(tail -1 $OUT/mc.log)"; grep -E "ERROR SUMMARY|^(FAILED|ERROR)" $OUT/mc.log | sort | uniq -c | head
  patch -R -p1 -s < docs/pending/prefetch_l2.patch; el prefetch; } ;;
esac; done
