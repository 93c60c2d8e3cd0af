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
