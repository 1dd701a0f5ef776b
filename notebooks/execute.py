"""Executes notebooks headless (nbclient) and fails on the first cell that raises.

usage: execute.py OUT_DIR NOTEBOOK...
Each executed notebook is written to OUT_DIR; a notebook that draws no figure fails,
since each of ours exists to plot something.
"""
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

out_dir = pathlib.Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
for path in map(pathlib.Path, sys.argv[2:]):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    images = sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    )
    nbformat.write(nb, out_dir / path.name)
    if images == 0:
        sys.exit(f"{path}: ran, but drew no figure")
    print(f"{path.name}: ok, {len(nb.cells)} cells, {images} figure(s)")
