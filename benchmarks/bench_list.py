"""Target 2: ``torch.hub.list("org/dlwp:main")`` (the checkout linked as
``TORCH_HOME/hub/org_dlwp_main``, the documented way to use a local repository by name) costs at
most 0.3 s more than ``import torch`` alone: whole fresh processes, alternating, medians.

    python benchmarks/bench_list.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
import time

from _setup import REPO_DIR, Row, fmt_s, log, median, yes_no

LIMIT_S = 0.3
LIST_CODE = (
    "import torch, sys\n"
    "names = torch.hub.list('org/dlwp:main')\n"
    "assert 'resnet101' in names and 'cyclegan' in names and 'neuraltalk2' in names, names\n"
    "print(len(names), 'torchvision' in sys.modules)\n"
)
TORCH_CODE = "import torch\n"


def _timed(code: str, env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd="/")
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{code!r} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout.strip()


def run(ws, *, runs: int) -> tuple[list[Row], dict]:
    link = ws.torch_home / "hub" / "org_dlwp_main"
    if not link.exists():
        link.symlink_to(REPO_DIR, target_is_directory=True)
    env = ws.env(offline=True)
    env.pop("PYTHONPATH", None)  # hub.list puts the repository on sys.path itself
    log(f"[list] warm-up, then {runs} runs of each in fresh processes")
    _, out = _timed(LIST_CODE, env)
    _timed(TORCH_CODE, env)
    count, imported_tv = out.split()
    times: dict[str, list[float]] = {"list": [], "torch": []}
    for r in range(runs):
        for key in ("list", "torch") if r % 2 == 0 else ("torch", "list"):
            times[key].append(_timed(LIST_CODE if key == "list" else TORCH_CODE, env)[0])
    t_list, t_torch = median(times["list"]), median(times["torch"])
    extra = t_list - t_torch
    log(
        f"[list] hub.list {t_list:.3f}s vs import torch {t_torch:.3f}s: +{extra:.3f}s "
        f"({count} entrypoints, torchvision imported: {imported_tv})"
    )
    rows = [
        Row(
            f"torch.hub.list('org/dlwp:main') process vs `import torch` process (median of {runs}; "
            f"{count} entrypoints; torchvision imported: {imported_tv.lower()})",
            fmt_s(t_list),
            fmt_s(t_torch),
            f"+{extra:.3f} s ({t_list / t_torch:.2f}×)",
            f"≤ +{LIMIT_S} s",
            yes_no(extra <= LIMIT_S),
        )
    ]
    return rows, {"times": times, "entrypoints": int(count), "torchvision_imported": imported_tv}
