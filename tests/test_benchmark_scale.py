"""`srise-jax benchmark` at scale: triplet batches over 4 CPU devices, and 2 processes.

Each run is a subprocess (the device count must be set before JAX is
imported, and `jax.distributed.initialize` must come before any other JAX
use) of a driver that registers the planted 32x32 region model of
tests/planted_face.py as `--model planted` and calls `srise_jax.cli.main`.
The reference is the default run: one process, one device, one triplet at
a time.
"""

import csv
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(__file__)

DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from planted_face import register_planted
    from srise_jax import cli

    # The loader runs when the command loads the model: after --distributed
    # has initialized JAX's processes.
    register_planted()
    sys.argv = ["srise-jax", *sys.argv[2:]]
    sys.exit(cli.main(sys.argv[1:]))
""")

# Two S-RISE counts (one part), a gradient and a random map, scored under
# two metric fills (the imputation's noise keyed per job, as the batch must
# keep it); 4 sample triplets, among them pairs the planted model rejects
# (checked below).
_ARGS = ["benchmark", "--model", "planted", "--data", "sample", "--num-triplets", "4",
         "--methods", "srise@4,srise@8,gradient,random", "--batch-size", "4",
         "--metric-batch", "8", "--curve-points", "5", "--bootstrap", "200",
         "--threshold", "0.2", "--save-maps", "4", "--metric-fill", "mean,impute"]
_EXACT = ("triplet", "pair", "side", "image", "reference", "method", "metric_fill",
          "iterations", "match", "deletion", "insertion")
_CLOSE = ("similarity", "deletion_auc", "insertion_auc", "deletion_curve",
          "insertion_curve")


def _driver(tmp_path):
    path = tmp_path / "driver.py"
    path.write_text(DRIVER)
    return [sys.executable, str(path), TESTS_DIR]


def _env(devices=1):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(name, None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _run(tmp_path, out, *extra, devices=1):
    proc = subprocess.run([*_driver(tmp_path), *_ARGS, *extra, "--out", str(out)],
                          env=_env(devices), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _read(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _table(out):
    """The table of table.md (the command line above it differs between runs)."""
    return [line for line in (out / "table.md").read_text().splitlines()
            if line.startswith("|")]


def _assert_same_rows(got, want):
    # triplets x pairs x sides x methods x fills
    assert len(got) == len(want) == 4 * 2 * 2 * 4 * 2
    for a, b in zip(got, want):
        assert {k: a[k] for k in _EXACT} == {k: b[k] for k in _EXACT}
        for column in _CLOSE:
            x = np.array(a[column].split(), float)
            y = np.array(b[column].split(), float)
            np.testing.assert_allclose(x, y, atol=1e-5, err_msg=column)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The default run: one process, one device, one triplet at a time."""
    tmp_path = tmp_path_factory.mktemp("reference")
    out = tmp_path / "run"
    _run(tmp_path, out)
    rows = _read(out / "results.csv")
    # The batches must mix accepted and rejected pairs to test the masking.
    assert {row["match"] for row in rows} == {"0", "1"}
    assert any(row["deletion"] for row in rows)
    assert {row["metric_fill"] for row in rows} == {"mean", "impute"}
    return out, rows


def test_triplet_batch_on_four_devices_equals_one_triplet_at_a_time(tmp_path, reference):
    ref_out, ref_rows = reference
    out = tmp_path / "run"
    # 3 triplets per batch on 4 devices: padded to 4, and the last batch is short.
    _run(tmp_path, out, "--triplet-batch", "3", devices=4)
    _assert_same_rows(_read(out / "results.csv"), ref_rows)
    assert _table(out) == _table(ref_out)
    for t in range(4):
        with np.load(out / "maps" / f"triplet{t:03d}.npz") as got, \
                np.load(ref_out / "maps" / f"triplet{t:03d}.npz") as want:
            assert sorted(got.files) == sorted(want.files)
            for name in want.files:
                np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_merge_into_the_single_process_results(tmp_path, reference):
    ref_out, ref_rows = reference
    out = tmp_path / "run"
    coordinator = f"127.0.0.1:{_free_port()}"
    # Two devices per process: each process spreads its batches over its own
    # devices. Process 1 reads its id from the environment, as a cluster
    # launcher sets it.
    env0, env1 = _env(devices=2), dict(_env(devices=2), JAX_PROCESS_ID="1")
    procs = [subprocess.Popen([*_driver(tmp_path), *_ARGS, "--triplet-batch", "2",
                               "--distributed", "--coordinator", coordinator,
                               "--num-processes", "2", *extra, "--out", str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for extra, env in ((["--process-id", "0"], env0), ([], env1))]
    try:
        outputs = [proc.communicate(timeout=240) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-3000:]
    assert "process 0 of 2" in outputs[0][0] and "process 1 of 2" in outputs[1][0]
    assert not list(out.glob("results.part*.csv"))
    _assert_same_rows(_read(out / "results.csv"), ref_rows)
    assert _table(out) == _table(ref_out)
