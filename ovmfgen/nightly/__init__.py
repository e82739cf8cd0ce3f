"""``invoke nightly``: the firmware build matrix, its checks and boots, its history and report.

matrix (nightly.yaml -> Matrix/Cell), cell (the cell process: build, check-elf, boots), repro (one cell
built twice, compared), jobs (cells as processes), history (nights on disk), report (index.html),
install (packagers' layout), emit (CI workflows), command (``invoke nightly``: run, merge), records
(the JSON records' types: a cell's result.json, summary.json).
"""
