"""`make bench` keeps working: its quick mode runs against this scenario's stack (MLflow direct,
through nginx, and the plain `mlflow server` it starts for the run) and its report is complete.
No timed assertion: the numbers are printed, never compared. What is asserted is what a user of
the stack would notice: no request of an authenticated client fails, at 32 concurrent clients,
on any operation, direct or through nginx."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
INVENTORY_DIR = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
OPERATIONS = {"log-batch", "runs-create", "runs-search", "runs-get", "experiments-search", "mixed"}


def test_quick_bench_reports_every_cell_and_no_errors(tmp_path):
    env = dict(os.environ, QUICK="1", BENCH_HOST="default-mlflow", BENCH_INVENTORY=str(INVENTORY_DIR),
               BENCH_OUT=str(tmp_path))
    out = subprocess.run([str(ROOT / "scripts" / "bench.sh")], env=env, capture_output=True, text=True, timeout=600)
    print(out.stdout[-6000:])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(tmp_path.glob("bench-*.json")).read_text())

    cells = {(c["target"], c["operation"]) for c in result["cells"]}
    targets = {"deployed direct", "through nginx", "plain mlflow server"}
    assert cells == {(t, o) for t in targets for o in OPERATIONS}
    for cell in result["cells"]:
        assert cell["ok"] > 0, cell
        if cell["target"] != "plain mlflow server":
            assert cell["errors"] == {}, cell
    assert set(result["artifacts"]["median"]) == targets | {"boto3 → MinIO"}
    assert result["memory"]["deployed direct"]["rss_mib"] > 0
    # The plain server was stopped again: nothing of the run is left on the host.
    leftover = subprocess.run(["docker", "exec", "default-mlflow", "systemctl", "is-active", "mlflow-bench-plain"],
                              capture_output=True, text=True)
    assert leftover.stdout.strip() != "active"
