"""`srise-jax benchmark`, `srise-jax figures` and benchmarks/partial_tables.py
on a planted 32x32 model (fast)."""

import csv
import json
import os
import runpy
import shutil
import socket
import sys
from pathlib import Path

import pytest
from conftest import assert_one_error_line
from planted_face import NAME, planted_model, register_planted

from srise_jax import benchmark, cli, models, outputs, protocols

_PARTIAL_TABLES = Path(__file__).parents[1] / "benchmarks" / "partial_tables.py"
_METHODS = "srise@4,srise@8,random"
_OPTIONS = ["--model", "planted", "--batch-size", "4", "--metric-batch", "8",
            "--curve-points", "5", "--bootstrap", "200", "--threshold", "0.2"]


@pytest.fixture
def planted_cli():
    """`--model planted`: the planted region model of tests/planted_face.py."""
    register_planted()
    yield planted_model()
    models.unregister_model(NAME)


def _read(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _run(out, *extra, methods=_METHODS):
    return cli.main(["benchmark", "--data", "sample", "--num-triplets", "2", "--methods",
                     methods, *_OPTIONS, *extra, "--out", str(out)])


def test_benchmark_rows_equal_the_library_run_and_reports_are_written(tmp_path, planted_cli,
                                                                      capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    rows = _read(out / "results.csv")
    assert len(rows) == 2 * 2 * 2 * 3  # triplets x pairs x sides x methods
    for name in ("table.md", "curves.png", "convergence.png", "run.json", "triplets.csv",
                 "maps/triplet000.npz", "maps/triplet001.npz"):
        assert (out / name).is_file(), name
    table = (out / "table.md").read_text()
    assert "| srise | 4 |" in table and "| srise | 8 |" in table and "| random | - |" in table
    printed = capsys.readouterr().out
    assert printed.startswith("planted, threshold 0.2: 2 triplets x 3 methods; "
                              "2 triplets to run\n")
    assert table.split("\n\n", 3)[3] in printed  # Table 1, after title and command

    # The command runs the library's benchmark (tests/test_benchmark.py checks
    # its rows against the explainers and metrics): same rows, same table.
    library = tmp_path / "library"
    result = benchmark.run_benchmark(planted_cli, protocols.sample_protocol()[:2], _METHODS,
                                     library, threshold=0.2, batch_size=4, metric_batch=8,
                                     curve_points=5)
    assert [{**r, "seconds": ""} for r in rows] == [{**r, "seconds": ""} for r in result.rows]
    assert (library / "run.json").read_text() == (out / "run.json").read_text()
    # The paired tables compare with the default S-RISE at its largest count.
    reports = benchmark.write_reports(library, model_label="planted",
                                      labels=_METHODS.split(","), paired_with="srise@8",
                                      num_resamples=200)
    assert (library / "table.md").read_text().split("\n\n", 2)[2] == \
        table.split("\n\n", 3)[3]
    assert "### Paired with srise@8, metric fill: mean" in table
    assert [line["method"] for line in reports.paired["mean"]] == ["srise@4", "random"]
    assert reports.paths == [library / "table.md", library / "curves.png",
                             library / "fills.png", library / "convergence.png"]


def test_benchmark_resumes_adds_methods_and_repairs_a_killed_run(tmp_path, planted_cli,
                                                                   capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    first = (out / "results.csv").read_bytes()

    # A new method is added to the finished triplets; old rows stay as they were.
    assert _run(out, methods=_METHODS + ",centre_prior") == 0
    second = (out / "results.csv").read_bytes()
    assert second.startswith(first)
    added = _read(out / "results.csv")[24:]
    assert len(added) == 8 and {r["method"] for r in added} == {"centre_prior"}

    # Killed mid-append: the last triplet's block cut in the middle of a line.
    lines = second.decode().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-3]) + lines[-3][:10])
    assert _run(out, methods=_METHODS + ",centre_prior") == 0
    rows = _read(out / "results.csv")
    keys = [(r["triplet"], r["pair"], r["side"], r["method"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 4 * 4
    # Rerun rows are the same numbers (same keys, same maps); only times differ.
    before = {(r["triplet"], r["pair"], r["side"], r["method"]): r
              for r in csv.DictReader(second.decode().splitlines())}
    for row in rows:
        old = before[(row["triplet"], row["pair"], row["side"], row["method"])]
        assert {**row, "seconds": ""} == {**old, "seconds": ""}

    # Different settings never mix into one table.
    capsys.readouterr()
    assert_one_error_line(_run(out, "--seed", "1"), capsys, "holds a run with seed")


def test_benchmark_scores_under_each_metric_fill_and_adds_fills(tmp_path, planted_cli,
                                                              capsys):
    out = tmp_path / "run"
    assert _run(out, "--metric-fill", "mean,blur", methods="random") == 0
    rows = _read(out / "results.csv")
    assert len(rows) == 2 * 2 * 2 * 2  # triplets x pairs x sides x fills
    assert [r["metric_fill"] for r in rows[:2]] == ["mean", "blur"]
    table = (out / "table.md").read_text()
    headings = [line for line in table.splitlines() if line.startswith("## ")]
    assert headings == ["## Overview: average of Deletion and Insertion per metric fill",
                        "## Table 1, metric fill: mean", "## Table 1, metric fill: blur"]
    printed = capsys.readouterr().out
    assert printed.startswith("planted, threshold 0.2: 2 triplets x 1 methods x 2 metric "
                              "fills (mean, blur); 2 triplets to run\n")
    assert table.split("\n\n", 3)[3] in printed  # both tables, after title and command
    # The same rows as the library's run with those fills.
    library = benchmark.run_benchmark(planted_cli, protocols.sample_protocol()[:2], "random",
                                      tmp_path / "library", threshold=0.2, batch_size=4,
                                      metric_batch=8, curve_points=5,
                                      metric_fills=("mean", "blur"))
    assert [{**r, "seconds": ""} for r in rows] == \
        [{**r, "seconds": ""} for r in library.rows]

    # Resuming with a fill added scores the finished triplets under it alone.
    first = (out / "results.csv").read_bytes()
    assert _run(out, "--metric-fill", "mean,blur,impute", methods="random") == 0
    assert (out / "results.csv").read_bytes().startswith(first)
    added = _read(out / "results.csv")[len(rows):]
    assert len(added) == 8 and {r["metric_fill"] for r in added} == {"impute"}
    assert "## Table 1, metric fill: impute" in (out / "table.md").read_text()
    # Rerun: nothing to do, and the impute rows are reproducible.
    assert _run(out, "--metric-fill", "impute", methods="random") == 0
    assert "0 triplets to run" in capsys.readouterr().out
    again = tmp_path / "again"
    assert _run(again, "--metric-fill", "impute", methods="random") == 0
    assert [{**r, "seconds": ""} for r in _read(again / "results.csv")] == \
        [{**r, "seconds": ""} for r in added]
    assert_one_error_line(_run(tmp_path / "bad", "--metric-fill", "mean,smear"), capsys,
                          "unknown metric fill(s) 'smear'")
    assert not (tmp_path / "bad").exists()


def test_benchmark_bad_inputs_fail_in_one_line(tmp_path, planted_cli, capsys):
    assert_one_error_line(cli.main(["benchmark", "--data", str(tmp_path / "none"),
                                    "--out", str(tmp_path / "o")]), capsys, "not a directory")
    assert_one_error_line(_run(tmp_path / "o", methods="srise@4,nope"), capsys,
                          "unknown explainer 'nope'")
    assert not (tmp_path / "o").exists()


def test_figures_writes_figures_3_to_6(tmp_path, planted_cli):
    out = tmp_path / "figs"
    assert cli.main(["figures", "--model", "planted", "--num-masks", "4", "--batch-size", "4",
                     "--convergence", "2,4", "--out", str(out)]) == 0
    for name in ("fig3.png", "fig4.png", "fig5_mask.png", "fig5_sunglasses.png", "fig6.png"):
        assert (out / name).stat().st_size > 10_000, name


def test_benchmark_distributed_options_fail_in_one_line(tmp_path, planted_cli, capsys,
                                                        monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert_one_error_line(_run(tmp_path / "o", "--process-id", "0"), capsys,
                          "--process-id: only with --distributed")
    assert_one_error_line(_run(tmp_path / "o", "--distributed", "--process-id", "0"), capsys,
                          "--distributed needs --coordinator (or $JAX_COORDINATOR_ADDRESS), "
                          "--num-processes (or $JAX_NUM_PROCESSES)")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    assert_one_error_line(_run(tmp_path / "o", "--distributed"), capsys,
                          "$JAX_NUM_PROCESSES: must be a positive integer")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    assert_one_error_line(_run(tmp_path / "o", "--distributed", "--process-id", "2"), capsys,
                          "--process-id 2 is not below --num-processes 2")
    assert not (tmp_path / "o").exists()


def test_benchmark_merges_parts_left_by_a_distributed_run(tmp_path, planted_cli):
    out = tmp_path / "run"
    assert _run(out) == 0
    whole = (out / "results.csv").read_bytes()
    # An interrupted 2-process run: each part holds its triplet, nothing merged;
    # the part of process 1 was cut mid-line.
    lines = whole.decode().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    (out / "results.part0.csv").write_text(header + "".join(rows[:12]))
    (out / "results.part1.csv").write_text(header + "".join(rows[12:-1]) + rows[-1][:7])
    (out / "results.csv").unlink()
    assert _run(out) == 0
    assert not list(out.glob("results.part*.csv"))
    # The merged rows, plus the cut method's rows run again (same keys, same numbers).
    job = lambda r: (r["triplet"], r["pair"], r["side"], r["method"])
    got = {job(r): {**r, "seconds": ""} for r in _read(out / "results.csv")}
    want = {job(r): {**r, "seconds": ""}
            for r in csv.DictReader(whole.decode().splitlines())}
    assert len(_read(out / "results.csv")) == len(want) and got == want


def test_ablation_runs_the_chosen_settings_and_rejects_unknown_ones(tmp_path, planted_cli,
                                                                    capsys):
    out = tmp_path / "ablation"
    assert cli.main(["benchmark", "--ablation", "--settings", "paper,fill=mean",
                     "--num-masks", "4", "--data", "sample", "--num-triplets", "1",
                     *_OPTIONS, "--out", str(out)]) == 0
    rows = _read(out / "results.csv")
    assert {r["method"] for r in rows} == {"paper", "fill=mean"}
    assert {r["iterations"] for r in rows} == {"4"}
    assert "Paired" not in (out / "table.md").read_text()  # no default reference
    capsys.readouterr()
    assert_one_error_line(cli.main(["benchmark", "--ablation", "--settings", "paper,nope",
                                    "--data", "sample", "--out", str(tmp_path / "bad")]),
                          capsys, "unknown setting(s) nope")
    assert not (tmp_path / "bad").exists()
    assert_one_error_line(cli.main(["benchmark", "--methods", "srise@4,random", "--paired-with",
                                    "rise@500", "--data", "sample",
                                    "--out", str(tmp_path / "bad")]),
                          capsys, "--paired-with rise@500: not one of this run's methods "
                                  "(srise@4, random)")
    assert not (tmp_path / "bad").exists()


def test_a_second_benchmark_on_one_out_fails_at_once_naming_the_first(tmp_path, planted_cli,
                                                                       capsys):
    # Two runs on one directory both finished with status 0, every row written twice.
    out = tmp_path / "run"
    with outputs.lock_directory(out, name=".lock"):  # as a running benchmark holds it
        status = _run(out)
        assert_one_error_line(status, capsys, f"{out}: in use by another run "
                                              f"(pid {os.getpid()} on {socket.gethostname()}, "
                                              "started ")
        assert not (out / "results.csv").exists() and not (out / "run.json").exists()
    assert _run(out) == 0  # once the first is done


@pytest.mark.parametrize("second_header", [False, True])
def test_a_rerun_keeps_rows_written_twice_and_says_what_it_left_out(tmp_path, planted_cli,
                                                                    capsys, second_header):
    # What two runs appending at once left: each triplet's rows twice (and
    # the header again when both found the file empty). A rerun used to count
    # 8 rows per (triplet, method) where 4 were expected, discard every row
    # silently and start over (or fail on the second header).
    out = tmp_path / "run"
    assert _run(out) == 0
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    half = len(rows) // 2  # triplet 0, then triplet 1
    (out / "results.csv").write_text(header + "".join(rows[:half])
                                     + (header if second_header else "")
                                     + "".join(rows[:half]) + "".join(rows[half:]) * 2)
    capsys.readouterr()
    assert _run(out) == 0
    printed, err = capsys.readouterr()
    assert "0 triplets to run" in printed
    assert (f"srise-jax: warning: {out / 'results.csv'}: left out {len(rows)} duplicate "
            "row(s)") in err
    assert ("1 repeated header line(s)" in err) == second_header
    # The finished rows, kept as they were (times included): nothing was run again.
    assert (out / "results.csv").read_text() == header + "".join(rows)


def _partial_tables(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["partial_tables.py", *map(str, args)])
    runpy.run_path(str(_PARTIAL_TABLES), run_name="__main__")


def test_partial_tables_merge_a_live_distributed_run_and_keep_what_is_asked(
        tmp_path, planted_cli, monkeypatch, capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    # A 2-process run caught mid-append: triplet 0 in results.csv, triplet 1
    # (12 rows: 2 pairs x 2 sides x 3 methods) in process 1's part, then a cut line.
    live = tmp_path / "live"
    live.mkdir()
    for name in ("run.json", "triplets.csv"):
        shutil.copy(out / name, live / name)
    (live / "results.csv").write_text(header + "".join(rows[:12]))
    (live / "results.part1.csv").write_text(header + "".join(rows[12:]) + rows[0][:7])
    before = {path.name: path.read_bytes() for path in live.iterdir()}

    _partial_tables(monkeypatch, live, tmp_path / "whole")
    assert {path.name: path.read_bytes() for path in live.iterdir()} == before
    assert "note: " + str(live / "results.part1.csv") in capsys.readouterr().err
    # The same tables as the finished run's: the title lines, then what
    # follows the command.
    benchmark.write_reports(out, model_label="planted", labels=_METHODS.split(","),
                            paired_with="srise@8", command="finished")
    whole, finished = ((path / "table.md").read_text().split("\n\n", 3)
                       for path in (tmp_path / "whole", out))
    assert whole[2].startswith("Command: `partial: the 2 triplets [0, 1] finished of the 2")
    assert (whole[:2], whole[3]) == (finished[:2], finished[3])
    assert "### Paired with srise@8, metric fill: mean" in whole[3]

    _partial_tables(monkeypatch, live, tmp_path / "first", "--first", "1")
    assert {row["triplet"] for row in _read(tmp_path / "first" / "results.csv")} == {"0"}
    assert json.loads((tmp_path / "first" / "run.json").read_text())["num_triplets"] == 1
    table = (tmp_path / "first" / "table.md").read_text()

    # Nothing left to keep (triplet 0 not finished), or identities the
    # bundled photos' names do not give: one error line each, OUT kept.
    (live / "results.csv").unlink()
    for args, message in (
            (["--first", "1"], "--first / --held-out-from keep none of its finished "
                               "triplets; no table to write"),
            (["--held-out-from", live], "--held-out-from: obama: cannot tell the identity")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            _partial_tables(monkeypatch, live, tmp_path / "first", *args)
        assert stop.value.code == 2
        assert message in capsys.readouterr().err.splitlines()[-1]
        assert (tmp_path / "first" / "table.md").read_text() == table
