"""The leaderboard site of the committed MiniLM results (``make site``): ``site/index.html``.

The recycling grid's store is not committed (its experts' weights are hours of CPU), so it is rebuilt in a
temporary folder from the committed files (``benchmarks/committed_grid.py``, the same rebuild with which
``tests/integration/test_committed_report.py`` regenerates the committed leaderboard and analysis byte for byte).
Then ``upcycle.build_site`` writes the site with the committed selection, merge and fusion results
(``--results benchmarks/results``).

    python benchmarks/site_minilm.py --out site [--screenshot docs/site.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from committed_grid import REPO, RESULTS, rebuild_store
from PIL import Image

from upcycle.report.site import build_site


def screenshot(page: Path, png: Path, *, width: int = 1280, height: int = 1500) -> None:
    """A PNG of ``page`` in headless Chromium (Debian's ``chromium``)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("headless Chromium is needed for --screenshot: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / "shot.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={shot}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        # 256 colours: a third of the size, the same picture to the eye (the README's copy stays small)
        Image.open(shot).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "site")
    parser.add_argument("--results", type=Path, default=Path(os.path.relpath(RESULTS)))
    parser.add_argument("--screenshot", type=Path, help="Also save a PNG of the bench page here.")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, rebuild_store(Path(folder) / "recycling_minilm.db") as store:
        site = build_site(store, args.out, results=[args.results])
    print(f"wrote {args.out}/index.html: {len(site.benches)} bench(es), {len(site.models)} checkpoint pages, "
          f"{len(site.selections)} selection, {len(site.merges)} merge, {len(site.fusions)} fusion result(s) in "
          f"{time.perf_counter() - started:.1f}s")
    if args.screenshot:
        page = args.out / f"{site.benches[0].slug}.html"
        screenshot(page, args.screenshot)
        print(f"wrote {args.screenshot} (a screenshot of {page})")


if __name__ == "__main__":
    main()
