"""The benchmark CLI's row and pass selection (benchmarks/bench.py), on the CPU: a bench that
silently measured other passes than asked would mislabel its tables."""
import pytest

from benchmarks import bench
from benchmarks.cases import Case


def test_case_passes_filter():
    c = Case("x", 4, 128)
    assert c.passes() == ("fwd", "fwdbwd")
    assert Case("x", 4, 128, only_passes=("fwd",)).passes() == ("fwd",)
    assert Case("x", 4, 128, kind="decode", only_passes=("fwd", "graph")).passes() == ("graph",)
    assert Case("x", 4, 128, family="addnorm", only_passes=("fwdbwd",)).passes() == ()


def test_run_measures_only_the_passes_asked():
    rows = bench.run(device="cpu", only="^cpu_n128_z_after$", passes=["fwd"], reps=2, budget_s=0.05,
                     providers=["ours"], compile=False, csv_path=None, log=None)
    timed = [r for r in rows if r["provider"] == "ours"]
    assert timed and {r["pass"] for r in timed} == {"fwd"}
    assert all(r["time_us"] and r["time_us"] > 0 and r["ok"] for r in timed)


def test_cli_rejects_unknown_pass():
    with pytest.raises(SystemExit) as e:
        bench.main(["--passes", "fwd,backward", "--list"])
    assert e.value.code == 2


def test_same_size_copy_is_a_reference_not_a_peer():
    """Each fwd / fwdbwd row also times a copy of the bytes it must move (samecopy); the
    table shows it as a column, but "vs best" compares ours with real peers only."""
    import io

    from benchmarks.table import print_table
    rows = bench.run(device="cpu", only="^cpu_n128_z_after$", passes=["fwd"], reps=2, budget_s=0.05,
                     providers=["ours"], compile=False, csv_path=None, log=None)
    ours = [r for r in rows if r["provider"] == "ours"]
    copy = [r for r in rows if r["provider"] == "samecopy"]
    assert len(copy) == 1 and copy[0]["pass"] == "fwd" and copy[0]["time_us"] > 0
    # the same bytes: the GB/s of each is its bytes over its time
    assert copy[0]["gbps"] * copy[0]["time_us"] == pytest.approx(ours[0]["gbps"] * ours[0]["time_us"])
    out = io.StringIO()
    print_table(rows, file=out)
    line = next(ln for ln in out.getvalue().splitlines() if ln.startswith("cpu_n128_z_after"))
    assert "samecopy" in out.getvalue() and line.split()[-2] == "-"  # no peer: vs best is "-"


def test_columns_puts_ours_side_by_side(tmp_path, capsys):
    """benchmarks.columns (the tuning scripts' summary): ours only, fraction for fwd/fwdbwd, us
    for graph, a run's missing row or missing CSV shown as '-', not as another run's value."""
    from benchmarks.columns import columns
    head = "name,provider,pass,time_us,frac\n"
    (tmp_path / "a.csv").write_text(head + "r1,ours,fwd,10,0.5\nr1,fng,fwd,9,0.6\nr2,ours,graph,2.25,0.1\n")
    (tmp_path / "b.csv").write_text(head + "r1,ours,fwd,8,0.625\n")
    columns([("a", str(tmp_path / "a.csv")), ("b", str(tmp_path / "b.csv")), ("c", str(tmp_path / "none.csv"))])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["r1", "fwd", "0.500", "0.625", "-"]
    assert lines[2].split() == ["r2", "graph", "2.250", "-", "-"]
    assert len(lines) == 3


def test_columns_takes_a_peer_column(tmp_path, capsys):
    """LABEL=CSV:PROVIDER puts that peer's numbers of the run beside ours (the A/B scripts'
    FlashInfer column), and a peer the run lacks leaves its column empty."""
    from benchmarks.columns import columns
    head = "name,provider,pass,time_us,frac\n"
    (tmp_path / "a.csv").write_text(head + "r1,ours,graph,2.02,0.1\nr1,flashinfer,graph,1.88,0.1\n")
    a = str(tmp_path / "a.csv")
    columns([("fi", a + ":flashinfer"), ("ours", a), ("fng", a + ":fng")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["r1", "graph", "1.880", "2.020", "-"]
    assert len(lines) == 2


def test_columns_keeps_dtypes_apart(tmp_path, capsys):
    """A row measured in two dtypes is two lines, not the last dtype's value under the name."""
    from benchmarks.columns import columns
    head = "name,dtype,provider,pass,time_us,frac\n"
    (tmp_path / "a.csv").write_text(head + "r1,bf16,ours,fwd,10,0.97\nr1,fp32,ours,fwd,20,0.92\n")
    columns([("a", str(tmp_path / "a.csv"))])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["r1", "bf16", "fwd", "0.970"]
    assert lines[2].split() == ["r1", "fp32", "fwd", "0.920"]


def _target_rows():
    """A synthetic CUDA run: a copy line, then ours / peers / samecopy on a few rows."""
    def r(name, m, n, provider, ps, t, frac=None, ok=True, device="NVIDIA H100 80GB HBM3"):
        return {"name": name, "M": m, "N": n, "dtype": "bf16", "provider": provider, "pass": ps, "time_us": t,
                "frac": frac, "ok": ok, "device": device}
    return [
        r("copy_ceiling", 1, 1 << 28, "copy", "copy", 700.0, 1.0),
        r("sweep_n1024", 1 << 16, 1024, "ours", "fwd", 100.0, 0.95),
        r("sweep_n1024", 1 << 16, 1024, "fng", "fwd", 99.0, 0.96),
        r("sweep_n65536", 1024, 65536, "ours", "fwd", 110.0, 0.84),
        r("sweep_n65536", 1024, 65536, "samecopy", "fwd", 95.0, 0.98),
        r("sweep_n65536", 1024, 65536, "eager", "fwd", 900.0, 0.1),
        r("small", 64, 128, "ours", "fwd", 1.0, 0.01),  # M*N < 2^24: no bandwidth bar
        r("decode_qwen3next", 2048, 128, "ours", "graph", 2.5),
        r("addrms_m64_n8192", 64, 8192, "ours", "graph", 3.4),
        r("addrms_m64_n8192", 64, 8192, "flashinfer", "graph", 3.8),
        r("addrms_m4096_n2048", 4096, 2048, "ours", "fwd", 27.0, 0.91),
        r("addrms_m4096_n2048", 4096, 2048, "flashinfer", "fwd", 20.0, 0.95, ok=False),  # wrong: no peer
    ]


def test_targets_summary_names_each_row_below_a_bar():
    """benchmarks.targets: each issue bar over the rows it covers; a row below it is listed with
    its number and, where timed, the copy of the same bytes; a peer whose output was wrong
    does not count; rows a bar does not cover (M*N < 2^24) are not judged by it."""
    import io

    from benchmarks.targets import check_targets, print_targets
    res = {t.title: r for t, r in check_targets(_target_rows())}
    bw = res["gated forward >= 0.90 of the copy ceiling (64 <= N <= 131072, M*N >= 2^24)"]
    assert sorted((k[0], met) for k, met, _ in bw) == [("sweep_n1024", True), ("sweep_n65536", False)]
    assert "a copy of the same bytes 0.980 (ours / copy 0.86)" in next(t for k, _, t in bw if k[0] == "sweep_n65536")
    peers = res["gated: no row slower than the fastest peer (forward)"]
    assert sorted((k[0], met) for k, met, _ in peers) == [("sweep_n1024", False), ("sweep_n65536", True)]
    assert res["decode M=2048 N=128: <= 3 us GPU time a forward under CUDA-graph replay"][0][1] is True
    assert res["add + RMSNorm <= 3 us under CUDA-graph replay at M <= 64"][0][1] is False
    assert res["add + RMSNorm never slower than FlashInfer (graph replay)"][0][1] is True
    assert "add + RMSNorm never slower than FlashInfer (forward)" not in res  # its only peer was wrong
    out = io.StringIO()
    print_targets(_target_rows(), file=out)
    text = out.getvalue()
    assert "FAIL  gated forward >= 0.90" in text and "sweep_n65536 bf16: 0.840 of the ceiling" in text
    assert "PASS  decode M=2048 N=128: <= 3 us" in text and text.rstrip().endswith("on the rows this run measured")


def test_targets_summary_skips_cpu_runs():
    import io

    from benchmarks.targets import print_targets
    rows = _target_rows()
    rows[0] = dict(rows[0], device="cpu: some model (2 threads)")
    out = io.StringIO()
    print_targets(rows, file=out)
    assert out.getvalue() == ""
