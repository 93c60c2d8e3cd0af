"""A sequential model of one thread of the aligned loop kernels' shared-memory slots
(csrc/cuda/gated_norm_{fwd,bwd}_loop_async.cu), checked offline for every small shape:
cp.async groups land only at a wait (cp.async.wait_group semantics); reading a slot with a
copy still in flight, or finding another (row, tensor, vector) there than the one the pass
wants, fails. It mirrors the kernels' control flow line by line, so a change to their slot
protocol (which vectors are staged, when the next row's copies are issued, which wait a
pass needs) should be made here too and rerun: python3 scripts/loop_async_model.py"""
import itertools

class Smem:
    def __init__(s):
        s.slot = {}; s.pending = []; s.cur = []
    def cp(s, sl, val): s.cur.append((sl, val))
    def commit(s): s.pending.append(s.cur); s.cur = []
    def wait(s, n):
        assert not s.cur or True
        while len(s.pending) > n:
            for sl, v in s.pending.pop(0): s.slot[sl] = v
    def read(s, sl):
        for g in s.pending + [s.cur]:
            for q, _ in g:
                assert q != sl, f"read of slot {sl} with a copy in flight"
        return s.slot.get(sl)

def fwd(kn, slots, gate, early, rows, B=4, OB=2):
    nx = min(kn, slots); nz = min(kn, slots - nx) if gate else 0
    m = Smem()
    def read_x(r, k): return m.read(k) if k < nx else ("x", r, k)
    def read_z(r, k): return m.read(nx + k) if k < nz else ("z", r, k)
    def issue_x(r, k): m.cp(k, ("x", r, k))
    def issue_z(r):
        for k in range(nz): m.cp(nx + k, ("z", r, k))
        m.commit()
    def values(r, k0, hi):
        for j in range(B):
            k = k0 + j
            if k < hi:
                assert read_x(r, k) == ("x", r, k), (r, k, read_x(r, k))
                if early: assert read_z(r, k) == ("z", r, k)
    if rows:
        for k in range(nx): issue_x(rows[0], k)
        m.commit(); issue_z(rows[0])
    for i, r in enumerate(rows):
        rn = rows[i + 1] if i + 1 < len(rows) else None
        for k0 in range(nx, kn, B): values(r, k0, kn)
        m.wait(0 if early else 1)
        for k0 in range(0, nx, B): values(r, k0, nx)
        for k0 in range(0, kn, B): values(r, k0, kn)  # LayerNorm pass 2
        if not early: m.wait(0)
        for k0 in range(0, kn, OB):
            for j in range(OB):
                k = k0 + j
                if k < kn:
                    assert read_x(r, k) == ("x", r, k)
                    if gate: assert read_z(r, k) == ("z", r, k), (r, k, read_z(r, k))
            if rn is not None:
                for j in range(OB):
                    if k0 + j < nx: issue_x(rn, k0 + j)
        if rn is not None:
            m.commit(); issue_z(rn)
    m.wait(0)

def bwd(kn, slots, gate, rows, SB=2, GB=2):
    fill = lambda used: min(kn, slots - used)
    nx = fill(0); ndy = fill(nx); nz = fill(nx + ndy) if gate else 0
    m = Smem()
    def rd(name, r, k, staged, base):
        return m.read(base + k) if k < staged else (name, r, k)
    def issue(r, k):
        if k < nx: m.cp(k, ("x", r, k))
        if k < ndy: m.cp(nx + k, ("dy", r, k))
        if k < nz: m.cp(nx + ndy + k, ("z", r, k))
    def check(r, k):
        assert rd("x", r, k, nx, 0) == ("x", r, k)
        assert rd("dy", r, k, ndy, nx) == ("dy", r, k)
        if gate: assert rd("z", r, k, nz, nx + ndy) == ("z", r, k)
    if rows:
        for k in range(nx): issue(rows[0], k)
        m.commit()
    for i, r in enumerate(rows):
        rn = rows[i + 1] if i + 1 < len(rows) else None
        for k0 in range(nx, kn, SB):
            for j in range(SB):
                if k0 + j < kn: check(r, k0 + j)
        m.wait(0)
        for k0 in range(0, nx, SB):
            for j in range(SB):
                if k0 + j < nx: check(r, k0 + j)
        for k0 in range(0, kn, GB):
            for j in range(GB):
                if k0 + j < kn: check(r, k0 + j)
            if rn is not None:
                for j in range(GB):
                    if k0 + j < nx: issue(rn, k0 + j)
        if rn is not None: m.commit()
    m.wait(0)

n = 0
for kn, slots, nrows in itertools.product(range(1, 10), range(0, 30), range(0, 4)):
    rows = list(range(0, 3 * nrows, 3))
    for gate, early in [(False, False), (True, False), (True, True)]:
        fwd(kn, min(slots, kn * (2 if gate else 1)), gate, early, rows)
        for ob in (1, 2, 3):
            fwd(kn, min(slots, kn * (2 if gate else 1)), gate, early, rows, OB=ob)
        n += 1
    for gate in (False, True):
        bwd(kn, min(slots, kn * (3 if gate else 2)), gate, rows)
        bwd(kn, min(slots, kn * (3 if gate else 2)), gate, rows, GB=1)
print("ok", n)
