"""The notebooks in notebooks/ run end to end and are committed executed.

Every `notebooks/*.ipynb` is picked up by itself and executed with
SRISE_FAST=1 (the notebooks' small settings) in a kernel that runs this
interpreter: a kernelspec written to a temporary directory points at
`sys.executable`, so a `python3` kernel registered elsewhere (another
virtualenv, a system Jupyter) can never be the one that runs them.
"""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.util import run_sync
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "srise-jax-test"
# Per cell, with room for a slow or shared CI machine: with SRISE_FAST=1 no
# cell of 03_jax_pipelines takes more than about 15 s on 2 loaded cores.
CELL_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory):
    """A directory holding one kernelspec that launches this interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "srise-jax test kernel",
        "language": "python",
    }))
    return root


def run_notebook(nb, cwd: Path, kernel_dir: Path) -> None:
    """Execute `nb` in place with SRISE_FAST=1; AssertionError on the first failing cell.

    The message names the cell (its index among all cells, markdown included,
    as in Jupyter's cell list) and the last line of its error, e.g.
    "cell 7: ValueError: bad shape".
    """
    km = AsyncKernelManager(kernel_name=KERNEL_NAME,
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(cwd)}})
    env = dict(os.environ, SRISE_FAST="1")
    try:
        client.execute(env=env)
    except CellExecutionError:
        index, output = next((i, out) for i, cell in enumerate(nb.cells)
                             for out in cell.get("outputs", []) if out.output_type == "error")
        raise AssertionError(f"cell {index}: {output.ename}: {output.evalue}") from None
    except (CellTimeoutError, DeadKernelError) as error:
        # No error output is recorded for these; the message says which cell.
        raise AssertionError(str(error).strip().splitlines()[-1]) from None
    finally:
        # nbclient leaves a kernel manager it was given running: stop the
        # kernel here, or each notebook's kernel (1+ GB) outlives its test.
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors_in_fast_mode(path, kernel_dir):
    nb = nbformat.read(path, as_version=4)
    run_notebook(nb, path.parent, kernel_dir)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_was_executed_in_order(path):
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]
    counts = [cell.execution_count for cell in code]
    # 1..n without gaps: run top to bottom once in a fresh kernel, not
    # pieced together from cells rerun by hand.
    assert counts == list(range(1, len(code) + 1)), counts
    assert any(cell.outputs for cell in code), "no outputs: the notebook was saved unexecuted"
    errors = [(i, out.ename) for i, cell in enumerate(nb.cells)
              for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, f"committed with error outputs: {errors}"


def test_a_failing_cell_fails_with_its_index_and_error(tmp_path, kernel_dir):
    """The harness itself: the kernel runs this interpreter with SRISE_FAST=1,
    and a raising cell stops the run with that cell's index and error."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# throwaway"),
        nbformat.v4.new_code_cell(
            "import os, sys\nprint(sys.executable)\nprint(os.environ['SRISE_FAST'])\n"
            "print(os.getcwd())"),
        nbformat.v4.new_code_cell("raise ValueError('planted failure')"),
        nbformat.v4.new_code_cell("print('after the failure')"),
    ])
    with pytest.raises(AssertionError, match=r"^cell 2: ValueError: planted failure$"):
        run_notebook(nb, tmp_path, kernel_dir)
    printed = nb.cells[1].outputs[0].text.splitlines()
    assert printed == [sys.executable, "1", str(tmp_path.resolve())]
    assert not nb.cells[3].get("outputs"), "execution went on after the failing cell"
