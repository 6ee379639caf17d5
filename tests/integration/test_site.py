"""The leaderboard site built from a tiny store: values where they should be, hostile names shown as text, every
link resolving to a file of the folder, atomic rebuilds, ``upcycle site --serve``, and the page in headless
Chromium (the leaderboard rendered, the tables' script run, no script from the data run)."""

from __future__ import annotations

import html
import html.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from upcycle import FinetuneResult, Store
from upcycle.checkpoints import CheckpointRef
from upcycle.cli import app
from upcycle.errors import ConfigError
from upcycle.protocols import get_protocol
from upcycle.ranking import Bench, Candidate, build_leaderboard
from upcycle.report.site import MARKER, build_site, model_page
from upcycle.tasks import TaskRef

REPO = Path(__file__).parents[2]
SCRIPT = "<script>document.title='pwned'</script>"
QUOTED = 'it\'s "quoted" & <b>bold</b>'
IMAGE = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
BENCH = 'tiny "bench" <i>'
TARGETS = ("t_a", "t_b", IMAGE)
BASE_SCORE = {"t_a": 0.50, "t_b": 0.60, IMAGE: 0.70}
# candidate name -> (source task, gain in points per target, the same on both seeds)
CANDIDATES = {
    SCRIPT: ("t_a", {"t_a": 9.0, "t_b": 4.0, IMAGE: -2.0}),  # t_a: its own task, left out (overlap)
    QUOTED: ("t_q", {"t_a": 3.0, "t_b": 1.0, IMAGE: 2.0}),
    "expert-c": ("t_c", {"t_a": -1.0, "t_b": -3.0, IMAGE: 5.5}),
    "merged": (None, {"t_a": 6.0, "t_b": 2.0, IMAGE: 1.0}),
}
SEED_NOISE = {0: -0.01, 1: 0.01}  # around the base's mean; a candidate's seeds move together with the base's
PROTOCOL = get_protocol("quick")


def fingerprint(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()


def reference(name: str) -> CheckpointRef:
    return CheckpointRef(reference=f"/zoo/{name}", name=name, fingerprint=fingerprint(name), model_type="bert")


def put(store: Store, bench: Bench, member: Candidate, target: TaskRef, seed: int, score: float) -> None:
    spec = bench.spec(member, target, seed)
    store.put_result(spec, FinetuneResult(
        key=spec.key(), task_name=target.name, base_name=member.checkpoint.name, seed=seed, protocol=PROTOCOL.name,
        metric="accuracy", score=score, metrics={"accuracy": score}, n_train=64, n_test=64, epochs_run=1,
        train_seconds=1.0, eval_seconds=0.1, train_examples_per_s=64.0, eval_examples_per_s=640.0,
        eval_precision="fp32", versions={}, created_at="2026-01-01T00:00:00+00:00"))


def tiny_store(path: Path) -> Store:
    """A saved bench (base + 4 candidates x 3 targets x 2 seeds, hostile names among them), the zoo with lineage
    (experts finetuned from the base, a merge of two of them), and one verification-like finetune outside the bench
    (base and expert-c on t_new), which the site shows as a bench read off the stored finetunes."""
    store = Store(path)
    base = Candidate(checkpoint=reference("tiny-base"))
    members = {name: Candidate(checkpoint=reference(name), source_task=source)
               for name, (source, _) in CANDIDATES.items()}
    targets = {name: TaskRef(source=f"/data/{name}", name=name, fingerprint=f"task:{name}") for name in TARGETS}
    bench = Bench(name=BENCH, arch="bert-tiny", base=base, candidates=tuple(members.values()),
                  targets=tuple(targets.values()), seeds=(0, 1), protocol=PROTOCOL)
    store.put_bench(bench.name, bench.arch, bench.model_dump_json())
    store.put_checkpoint(fingerprint=fingerprint("tiny-base"), name="tiny-base", path="/zoo/tiny-base",
                         arch="bert-tiny", model_type="bert")
    for name, (source, _) in CANDIDATES.items():
        provenance = None
        if name == "merged":
            provenance = {"kind": "merge", "merge_method": "ties", "base_fingerprint": fingerprint("tiny-base"),
                          "inputs": [{"model": "/zoo/expert-c", "fingerprint": fingerprint("expert-c")},
                                     {"model": "/zoo/q", "fingerprint": fingerprint(QUOTED)}],
                          "base_model": {"model": "/zoo/tiny-base", "fingerprint": fingerprint("tiny-base")}}
        store.put_checkpoint(fingerprint=fingerprint(name), name=name, path=f"/zoo/{name}", arch="bert-tiny",
                             model_type="bert", source_task=source, base_fingerprint=fingerprint("tiny-base"),
                             provenance=provenance)
    for seed, noise in SEED_NOISE.items():
        for target in TARGETS:
            put(store, bench, base, targets[target], seed, BASE_SCORE[target] + noise)
            for name, (source, gains) in CANDIDATES.items():
                if source != target:
                    put(store, bench, members[name], targets[target], seed,
                        BASE_SCORE[target] + gains[target] / 100 + noise)
    extra = TaskRef(source="/data/t_new", name="t_new", fingerprint="task:t_new")
    put(store, bench, base, extra, 0, 0.40)
    put(store, bench, members["expert-c"], extra, 0, 0.47)
    return store


def expected_average(name: str) -> float:
    source, gains = CANDIDATES[name]
    counted = [gain for target, gain in gains.items() if target != source]
    return sum(counted) / len(counted)


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    for name in ("selection_minilm.json", "merge_minilm.json", "fusion_minilm.json"):
        shutil.copy(REPO / "benchmarks" / "results" / name, folder / name)
    (folder / "notes.json").write_text(json.dumps({"something": "else"}))
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, results_folder):
    folder = tmp_path_factory.mktemp("site")
    started = time.perf_counter()
    with tiny_store(folder / "tiny.db") as store:
        site = build_site(store, folder / "site", results=[results_folder])
        board = build_leaderboard(next(entry.board.bench for entry in site.benches if not entry.derived), store)
    seconds = time.perf_counter() - started
    return folder / "site", site, board, seconds


class Links(html.parser.HTMLParser):
    """Every href and src of a page, its table rows (cell texts by table id), its scripts."""

    def __init__(self):
        super().__init__()
        self.links, self.scripts, self.rows, self.tables = [], [], {}, []
        self._cell, self._svg = None, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._svg += tag == "svg"
        for name in ("href", "src"):
            if attrs.get(name):
                self.links.append(attrs[name])
        if tag == "script":
            self.scripts.append(attrs.get("src"))
        if tag == "table":
            self.tables.append(attrs.get("id"))
            self.rows.setdefault(attrs.get("id"), [])
        if tag == "tr" and self.tables:
            self.rows[self.tables[-1]].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        self._svg -= tag == "svg"
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.rows[self.tables[-1]][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "table" and self.tables:
            self.tables.pop()

    def handle_data(self, data):
        if self._cell is not None and not self._svg:  # a cell's text, not its interval bar's tooltip
            self._cell.append(data)


def parse(path: Path) -> Links:
    parser = Links()
    parser.feed(path.read_text())
    return parser


def bench_page(site) -> str:
    return next(f"{entry.slug}.html" for entry in site.benches if not entry.derived)


def test_the_leaderboard_shows_each_candidates_gain_and_interval_as_printed(built):
    out, site, board, seconds = built
    page = parse(out / bench_page(site))
    rows = {row[1]: row for row in page.rows["leaderboard"][1:]}  # by candidate name (as text)
    assert set(rows) == {"tiny-base (vanilla base)", *CANDIDATES}
    for expected_row in board.rows[1:]:
        row = rows[expected_row.candidate]
        assert row[0] == str(expected_row.rank)
        assert row[3] == f"{expected_average(expected_row.candidate):+.2f}" == f"{expected_row.avg_gain:+.2f}"
        assert row[4] == f"[{expected_row.ci_low:+.2f}, {expected_row.ci_high:+.2f}]"
        assert (row[5], row[6]) == (str(expected_row.wins), str(expected_row.losses))
    ranked = [row[1] for row in page.rows["leaderboard"][2:]]
    assert ranked == sorted(CANDIDATES, key=expected_average, reverse=True)
    per_target = {row[0]: row[1:] for row in page.rows["per-target-table"][1:]}
    assert per_target[SCRIPT] == ["overlap", "+4.00", "-2.00"]  # its own task left out
    assert per_target["tiny-base (vanilla base)"] == ["50.00", "60.00", "70.00"]  # absolute scores x100
    index = parse(out / "index.html")
    [bench_row] = [row for row in index.rows["benches-1"][1:] if row[0] == BENCH]
    assert bench_row[7:9] == ["merged", f"{expected_average('merged'):+.2f}"]  # the best candidate
    assert seconds < 60


def test_the_heatmap_has_one_cell_per_candidate_and_target(built):
    out, site, board, _ = built
    slug = bench_page(site).removesuffix(".html")
    svg = (out / "plots" / f"{slug}-heatmap.svg").read_text()
    ids = re.findall(r'<g id="(cell-\d+-\d+)"', svg)
    assert sorted(ids) == sorted(f"cell-{i}-{j}" for i in range(len(CANDIDATES)) for j in range(len(TARGETS)))
    page = (out / bench_page(site)).read_text()
    assert svg[:200] in page  # inlined in the bench page too
    assert ">+5.5<" in svg  # expert-c on the third target


def test_hostile_names_are_shown_as_text(built):
    out, _, _, _ = built
    pages = {path.name: path.read_text() for path in out.glob("*.html")}
    svgs = {path.name: path.read_text() for path in (out / "plots").glob("*.svg")}
    for text in [*pages.values(), *svgs.values()]:
        assert SCRIPT not in text and IMAGE not in text and "<b>bold</b>" not in text and "<i>" not in text
    bench = next(text for name, text in pages.items() if name.startswith("bench-") and "t_new" not in text)
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in bench
    assert "it&#39;s &#34;quoted&#34; &amp; &lt;b&gt;bold&lt;/b&gt;" in bench
    assert "&lt;img src=x onerror=" in bench  # the hostile target, as a column name
    assert "tiny &#34;bench&#34; &lt;i&gt;" in bench
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in pages[model_page(fingerprint(SCRIPT))]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", path.name) for path in out.rglob("*"))  # names never reach paths


def test_every_link_resolves_to_a_file_of_the_folder_and_nothing_comes_from_the_network(built):
    out, _, _, _ = built
    for page in out.glob("*.html"):
        parsed = parse(page)
        assert parsed.scripts == ["static/site.js"], page.name
        for link in parsed.links:
            assert not re.match(r"^[a-z]+:", link), (page.name, link)  # no http:, https:, javascript:, data:
            target = link.split("#", 1)[0]
            if target:
                assert (out / target).is_file(), (page.name, link)
    assert (out / MARKER).is_file()


def test_checkpoint_pages_show_lineage_scores_and_the_model_index(built):
    out, site, _, _ = built
    merged = parse(out / model_page(fingerprint("merged")))
    text = (out / model_page(fingerprint("merged"))).read_text()
    assert "Merged (ties) from:" in text
    assert model_page(fingerprint("expert-c")) in merged.links and model_page(fingerprint(QUOTED)) in merged.links
    assert model_page(fingerprint("tiny-base")) in merged.links
    assert "model-index:" in text and "name: merged" in text
    expert = (out / model_page(fingerprint("expert-c"))).read_text()
    assert "merged into" in expert  # its descendants
    scores = {row[0]: row[3] for row in parse(out / model_page(fingerprint("expert-c"))).rows["scores"][1:]}
    assert scores["t_a"] == "49.00" and scores["t_new"] == "47.00"  # mean over seeds x100
    base = (out / model_page(fingerprint("tiny-base"))).read_text()
    assert "the vanilla base of this bench" in base and "finetuned on t_c" in base
    kinds = {model.name: model.kind for model in site.models}
    assert kinds == {"tiny-base": "base", SCRIPT: "finetuned", QUOTED: "finetuned", "expert-c": "finetuned",
                     "merged": "merge"}


def test_stored_finetunes_outside_any_bench_become_a_bench(built):
    out, site, _, _ = built
    [derived] = [entry for entry in site.benches if entry.derived]
    assert derived.board.bench.name == "results-tiny-base" and derived.board.targets == ["t_new"]
    rows = parse(out / f"{derived.slug}.html").rows["leaderboard"]
    assert rows[2][1:4] == ["expert-c", "t_c", "+7.00"]
    assert "needs at least 3 candidates" in (out / f"{derived.slug}.html").read_text()


def test_selection_merge_and_fusion_results(built, results_folder):
    out, site, _, _ = built
    selection = parse(out / "selection.html")
    document = json.loads((results_folder / "selection_minilm.json").read_text())
    default, nested = document["default"], document["nested"]
    committed = document["estimators"][default]
    shown = next(row for row in selection.rows["selection-1"][1:] if row[0] == f"{default} (default)")

    def interval(pair: list[float]) -> str:
        return f"[{pair[0]:.1f}, {pair[1]:.1f}]"

    assert shown[1:5] == [f"{committed['regret_at_1']:.2f}", interval(committed["regret_at_1_ci"]),
                          f"{committed['regret_at_3']:.2f}", interval(committed["regret_at_3_ci"])]
    page = (out / "selection.html").read_text()
    assert f"Regret@1 {nested['regret_at_1']:.2f}" in page and f"Regret@3 {nested['regret_at_3']:.2f}" in page
    merges = parse(out / "merges.html")
    average = next(row for row in merges.rows["merge-1"][1:] if row[0] == "merge-average")
    assert average[1:3] == ["+7.95", "[+2.83, +14.30]"]
    fusion = (out / "fusion.html").read_text()
    assert "iteration 5" in fusion and "+6.28" in fusion and "[-1.48, +14.41]" in fusion
    assert len(site.fusions) == 2 and (out / "plots").glob("fusion-*.svg")
    assert [note.split(":")[0] for note in site.skipped] == ["notes.json"]
    index = (out / "index.html").read_text()
    assert "notes.json: not a selection, merge or fusion result" in index


def test_a_fusion_bench_in_the_store_is_drawn_as_a_curve_by_iteration(tmp_path):
    """The fused bases NAME-iterN of a ``fusion-*`` bench are placed by iteration, with their leaderboard rows'
    gains and intervals; the base is iteration 0."""
    gains = {"run-iter2": (4.0, 6.0), "run-iter1": (1.0, 3.0)}  # per target, the same on both seeds
    base = Candidate(checkpoint=reference("tiny-base"))
    members = {name: Candidate(checkpoint=reference(name)) for name in gains}
    targets = [TaskRef(source=f"/data/{name}", name=name, fingerprint=f"task:{name}") for name in ("u", "v")]
    bench = Bench(name="fusion-run", arch="bert-tiny", base=base, candidates=tuple(members.values()),
                  targets=tuple(targets), seeds=(0, 1), protocol=PROTOCOL)
    with Store(tmp_path / "fusion.db") as store:
        store.put_bench(bench.name, bench.arch, bench.model_dump_json())
        for seed, noise in SEED_NOISE.items():
            for index, target in enumerate(targets):
                put(store, bench, base, target, seed, 0.5 + noise)
                for name, values in gains.items():
                    put(store, bench, members[name], target, seed, 0.5 + values[index] / 100 + noise)
        site = build_site(store, tmp_path / "site", png=False)
        rows = {row.candidate: row for row in build_leaderboard(bench, store).rows[1:]}
    [curve] = site.fusions
    assert [(p.iteration, p.value) for p in curve.points] == [(0, 0.0), (2, 5.0), (1, 2.0)]
    assert [(p.low, p.high) for p in curve.points[1:]] == [(rows[n].ci_low, rows[n].ci_high) for n in gains]
    page = (tmp_path / "site" / "fusion.html").read_text()
    assert "fusion-run" in page and "+5.00" in page and (tmp_path / "site" / "plots" / "fusion-fusion-run.svg").exists()
    assert "Fused base of iteration 2" in (tmp_path / "site" / model_page(fingerprint("run-iter2"))).read_text()


def test_a_rerun_replaces_the_folder_and_a_foreign_folder_is_refused(tmp_path, results_folder):
    with tiny_store(tmp_path / "tiny.db") as store:
        out = tmp_path / "site"
        build_site(store, out, png=False)
        (out / "stale.html").write_text("old")
        build_site(store, out, benches=[BENCH], png=False)
        assert not (out / "stale.html").exists()
        assert not list(out.glob("plots/*.png"))
        assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".site")] == []
        foreign = tmp_path / "mine"
        foreign.mkdir()
        (foreign / "thesis.tex").write_text("precious")
        with pytest.raises(ConfigError, match="not a site written by upcycle"):
            build_site(store, foreign, png=False)
        assert (foreign / "thesis.tex").read_text() == "precious"
        with pytest.raises(ConfigError, match="No bench named"):
            build_site(store, tmp_path / "other", benches=["nope"], png=False)
        assert not (tmp_path / "other").exists()


def test_the_cli_builds_and_serves_the_site(tmp_path):
    with tiny_store(tmp_path / "tiny.db"):
        pass
    result = CliRunner().invoke(app, ["site", "--db", str(tmp_path / "tiny.db"), "--out", str(tmp_path / "site"),
                                      "--no-png"])
    assert result.exit_code == 0, result.output
    assert "2 bench(es), 5 checkpoint page(s)" in result.output
    empty = CliRunner().invoke(app, ["site", "--db", str(tmp_path / "empty.db"), "--out", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "nothing to show yet" in empty.output
    assert not (tmp_path / "empty.db").exists() and not (tmp_path / "none").exists()
    process = subprocess.Popen(
        [sys.executable, "-m", "upcycle", "site", "--db", str(tmp_path / "tiny.db"), "--out", str(tmp_path / "served"),
         "--no-png", "--serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"},
        # Ctrl-C as at a terminal: a test run started in the background of a script (`make test &`) inherits SIGINT
        # ignored, and a Python started with SIGINT ignored never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = None
        for line in process.stdout:
            match = re.search(r"(http://127\.0\.0\.1:\d+/index\.html)", line)
            if match:
                url = match.group(1)
                break
        assert url, "no URL printed"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and b"Which checkpoint should I start from?" in response.read()
        with urllib.request.urlopen(url.replace("index.html", "static/site.js"), timeout=10) as response:
            assert b"sortable" in response.read()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            rest = process.communicate()[0]
            pytest.fail(f"--serve did not stop within 60 s of Ctrl-C; it printed after the URL:\n{rest}")
    assert process.returncode == 0


def test_report_plots_writes_the_benchs_figures(tmp_path):
    with tiny_store(tmp_path / "tiny.db"):
        pass
    result = CliRunner().invoke(app, ["report", "--db", str(tmp_path / "tiny.db"), "--bench", BENCH, "--out",
                                      str(tmp_path / "out"), "--prefix", "tiny", "--plots"])
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["tiny.csv", "tiny_analysis.json", "tiny_analysis.md", "tiny_gains.png", "tiny_gains.svg",
                     "tiny_heatmap.png", "tiny_heatmap.svg", "tiny_leaderboard.md"]
    svg = (tmp_path / "out" / "tiny_heatmap.svg").read_text()
    assert len(re.findall(r'<g id="cell-\d+-\d+"', svg)) == len(CANDIDATES) * len(TARGETS)
    assert "&lt;script&gt;" in svg and SCRIPT not in svg


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None,
                    reason="headless Chromium not installed (Debian package `chromium`; `make test` "
                           "installs it when run as root where apt can reach its mirror)")
def test_the_bench_page_in_headless_chromium(built, tmp_path):
    """Opens the built page from disk in a real browser: the leaderboard table is rendered with every row, the
    site's script ran (the tables became sortable), no script from the data ran (the title and body are
    untouched, no element was made from a name), and a screenshot of it is a real picture."""
    from PIL import Image

    out, site, _, _ = built
    page = (out / bench_page(site)).resolve().as_uri()
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}", "--window-size=1280,1000"]
    started = time.perf_counter()
    dom = subprocess.run([*flags, "--virtual-time-budget=3000", "--dump-dom", page], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    shot = tmp_path / "page.png"
    subprocess.run([*flags, f"--screenshot={shot}", page], capture_output=True, timeout=60, check=True)
    seconds = time.perf_counter() - started
    assert seconds < 30
    parsed = Links()
    parsed.feed(dom)
    assert len(parsed.rows["leaderboard"]) == 1 + 1 + len(CANDIDATES)  # header, base, candidates
    assert 'data-js="ready"' in dom and 'data-sortable="ready"' in dom  # site.js ran
    assert html.unescape(re.search(r"<title>(.*?)</title>", dom).group(1)) == f"{BENCH} · upcycle"  # not 'pwned'
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]
    assert parsed.scripts == ["static/site.js"]  # no script element from the data
    assert not re.search(r"<img[^>]*onerror", dom)  # no element made from a name
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # the name, shown as text
    image = Image.open(shot)
    assert image.size == (1280, 1000)
    colours = image.convert("RGB").resize((64, 50)).getcolors(64 * 50)
    assert colours is not None and len(colours) > 20  # not a blank page
