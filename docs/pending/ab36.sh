#!/usr/bin/env bash
# Next device call (~8 min, no carry; LIMIT=<s> skips what would not fit):
#  plain  ldg_plain.patch: the kernels' 16-byte loads of read-only data as plain ld.global
#         (LDG.E.128, as FLA's fused_norm_gate issues them: its PTX compiled offline for sm_90,
#         docs/pending/README.md) instead of ld.global.nc (__ldg: LDG.E.128.CONSTANT). The patch
#         routes every such load through vec.cuh ldg16; built with -DGN_LDG_PLAIN
#         (GATEDNORM_NVCC_FLAGS) it is plain, else main's code. Interleaved builds d1 p1 d2 p2
#         (d: main's loads, p: plain), forward on the rows that load with it (the small-block
#         and block-row forward, the decode kernel under graph replay), forward+backward on one;
#         then the CUDA forward tests on the plain build. fng leads our forward by 1-3 % there.
. "$(dirname "$0")/common.sh"
for st in ${STAGES:-plain}; do case $st in
plain) left 420 plain && { patch -p1 -s < docs/pending/ldg_plain.patch || exit 1
  F='^(rms_z_4096|rms_noz_4096|sweep_n(1024|4096|8192)|odd_n5000)$'
  B='^rms_z_4096$'; D='^decode_qwen3next$'
  for v in d1 p1 d2 p2; do
    if [ ${v:0:1} = p ]; then export GATEDNORM_NVCC_FLAGS=-DGN_LDG_PLAIN; else unset GATEDNORM_NVCC_FLAGS; fi
    build; [ ${v:1} = 1 ] && echo "$v: $(cuobjdump -sass torch_ops/_C*.so 2>/dev/null | grep -oE 'LDG\.E\.128(\.CONSTANT)? ' | sort | uniq -c | tr '\n' ' ')"
    bench f$v bf16,fp16 fwd "$F" --providers ours; bench b$v bf16 fwdbwd "$B" --providers ours
    bench g$v bf16 graph "$D" --providers ours; el $v
  done
  cols $OUT/fd1.csv $OUT/fp1.csv $OUT/fd2.csv $OUT/fp2.csv
  cols $OUT/bd1.csv $OUT/bp1.csv $OUT/bd2.csv $OUT/bp2.csv
  cols $OUT/gd1.csv $OUT/gp1.csv $OUT/gd2.csv $OUT/gp2.csv
  export GATEDNORM_NVCC_FLAGS=-DGN_LDG_PLAIN  # the last build is plain: its tests
  timeout 90 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k "cuda and (match or decode or strided or block_row)" \
    tests/test_forward.py tests/test_fwd_small.py > $OUT/tp.log 2>&1
  echo "plain build, test_forward + test_fwd_small: exit $? $(tail -1 $OUT/tp.log)"; grep -E "^(FAILED|ERROR)" $OUT/tp.log | head
  unset GATEDNORM_NVCC_FLAGS; patch -R -p1 -s < docs/pending/ldg_plain.patch; el plain; } ;;
esac; done
