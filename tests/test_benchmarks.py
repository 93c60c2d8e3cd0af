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


def test_columns_keeps_dtypes_apart(tmp_path, capsys):
    """A row measured in two dtypes is two lines, not the last dtype's value under the name."""
    from benchmarks.columns import columns
    head = "name,dtype,provider,pass,time_us,frac\n"
    (tmp_path / "a.csv").write_text(head + "r1,bf16,ours,fwd,10,0.97\nr1,fp32,ours,fwd,20,0.92\n")
    columns([("a", str(tmp_path / "a.csv"))])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["r1", "bf16", "fwd", "0.970"]
    assert lines[2].split() == ["r1", "fp32", "fwd", "0.920"]
