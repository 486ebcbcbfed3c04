"""`harness report`: HTML pages checked in a real headless Chromium (Debian's, via Playwright).

One real unet-tiny run (torch and caffe2-nnpack) feeds every test; edge cases (a failed build,
HTML in names, a layer above the peak, a history with a regression) are hand-edited copies of
it, as a reviewer would get them from a broken build or a hostile device name.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from harness.cli import main
from harness.devices.bandwidth import bandwidth_gb_s, measure_memory_bandwidth
from harness.report.browser import FLAGS, chromium_path, sandbox_flags
from harness.report.pages import write_compare_report, write_run_report
from harness.report.speedup import speedup
from harness.results.store import load_result, save_result
from tests.conftest import as_quiet, pytorch_run

EVIL = '<script>alert(1)</script><img src=x onerror="document.title=\'pwned\'">'


@pytest.fixture(scope="module")
def result(tiny_result: Path) -> Path:
    """The shared real `harness run` of unet-tiny with caffe2-nnpack and torch (conftest.py)."""
    return tiny_result


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path(), args=FLAGS + sandbox_flags())
        yield chromium
        chromium.close()


class Loaded:
    """A page opened in Chromium, with everything it complained about."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", lambda r: self.errors.append(f"failed to load {r.url}"))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def image_widths(self) -> list[int]:
        return self.page.evaluate("Array.from(document.images, i => i.complete ? i.naturalWidth : 0)")

    def column(self, table: str, col: int) -> list[str]:
        """The data-value of column `col` in each body row of the `table` selector, in page order."""
        return self.page.eval_on_selector_all(
            f"{table} tbody tr", f"rows => rows.map(r => r.cells[{col}].getAttribute('data-value'))")


@pytest.fixture
def open_page(browser):
    pages = []

    def _open(path: Path) -> Loaded:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        loaded = Loaded(page)
        page.goto(path.resolve().as_uri(), wait_until="load")
        pages.append(page)
        return loaded

    yield _open
    for page in pages:
        page.close()


def _edited(result: Path, dest: Path, edit) -> Path:
    doc = load_result(result)
    edit(doc)
    return save_result(doc, dest)


def _numbers(values: list[str]) -> list[float]:
    return [float(v) for v in values if v not in ("", None)]


def test_report_page_loads_cleanly_renders_images_and_sorts(result, tmp_path, open_page, capsys):
    assert main(["report", str(result), "--output-dir", str(tmp_path / "reports"),
                 "--results-root", str(tmp_path / "store")]) == 0
    doc = load_result(result)
    page_path = tmp_path / "reports" / "local" / f"{doc['harness']['commit'][:12]}-{doc['run_id']}" / "index.html"
    assert f"report written to {page_path}" in capsys.readouterr().out
    loaded = open_page(page_path)
    page = loaded.page
    assert loaded.errors == []
    widths = loaded.image_widths()
    assert len(widths) == 2 and all(w > 0 for w in widths)  # GFLOP/s and roofline; no history yet
    assert page.locator("table#layers tbody tr").count() == len(doc["builds"][0]["layers"])
    assert page.locator("#no-history").is_visible()
    # Summary: both builds ok, torch with a speedup against the default baseline.
    assert page.locator("#builds tr[data-build='caffe2-nnpack'] td").nth(1).inner_text() == "ok"
    assert "×" in page.locator("#builds tr[data-build='torch'] td").nth(8).inner_text()
    assert "GB/s measured" in page.locator("#bandwidth").inner_text()
    assert "2445" in page.locator("#state").inner_text() or "MHz" in page.locator("#state").inner_text()
    # Sorting: click the baseline's "ms" header; the column comes back ascending, then descending.
    header = page.locator("table#layers th[data-build='caffe2-nnpack']", has_text="ms").first
    col = int(header.get_attribute("data-col"))
    before = _numbers(loaded.column("table#layers", col))
    header.locator("button").click()
    assert _numbers(loaded.column("table#layers", col)) == sorted(before)
    assert header.get_attribute("aria-sort") == "ascending"
    header.locator("button").click()
    assert _numbers(loaded.column("table#layers", col)) == sorted(before, reverse=True)
    page.locator("table#layers th[data-col='1'] button").click()  # layer ids: text sort
    ids = page.eval_on_selector_all("table#layers tbody tr", "rows => rows.map(r => r.dataset.layer)")
    assert ids == sorted(ids, key=str.lower)
    assert loaded.errors == []


def test_html_in_names_and_messages_is_escaped_and_a_failed_build_is_shown(result, tmp_path, open_page):
    def hostile(doc):
        doc["device"]["name"] = "pi<b>4</b>" + EVIL
        for build in doc["builds"]:
            build["layers"][0]["id"] += EVIL
        doc["builds"].append({"name": "tvm" + EVIL, "status": "failed", "precision": "fp32",
                              "message": "compile error: " + EVIL, "e2e": None, "layers": []})

    path = _edited(result, tmp_path / "evil.json", hostile)
    page_path = write_run_report([path], tmp_path / "reports", results_root=tmp_path / "store")
    assert "<" not in str(page_path.relative_to(tmp_path))  # the device name is made path-safe
    assert "<script>alert(1)" not in page_path.read_text()
    loaded = open_page(page_path)
    page = loaded.page
    assert loaded.dialogs == [] and page.title() != "pwned"
    assert loaded.errors == []  # also: no request for the injected img src=x
    assert page.locator("img[src='x']").count() == 0
    assert EVIL in page.locator("#device-name").inner_text()
    assert page.locator("table#layers tbody tr").first.get_attribute("data-layer").endswith(EVIL)
    failed = page.locator("#builds tbody tr.build-failed")
    assert failed.count() == 1
    cells = failed.locator("td")
    assert cells.nth(0).inner_text() == "tvm" + EVIL
    assert cells.nth(1).inner_text() == "failed"
    assert cells.nth(2).inner_text() == "compile error: " + EVIL
    for name in ("caffe2-nnpack", "torch"):  # the others as normal
        row = page.locator(f"#builds tr[data-build='{name}'] td")
        assert row.nth(1).inner_text() == "ok" and float(row.nth(3).get_attribute("data-value")) > 0
    groups = page.locator("table#layers thead tr").first.locator("th.group").all_inner_texts()
    assert groups == ["caffe2-nnpack (baseline)", "torch"]
    assert all(w > 0 for w in loaded.image_widths())


def test_a_run_where_every_build_failed_still_makes_a_clean_page(result, tmp_path, open_page):
    def all_failed(doc):
        for build in doc["builds"]:
            build.update(status="failed", message=f"{build['name']} crashed", e2e=None, layers=[])

    loaded = open_page(write_run_report([_edited(result, tmp_path / "f.json", all_failed)], tmp_path / "r",
                                        results_root=tmp_path / "store"))
    assert loaded.errors == [] and loaded.image_widths() == []
    rows = loaded.page.locator("#builds tbody tr.build-failed")
    assert rows.count() == 2 and "caffe2-nnpack crashed" in rows.first.inner_text()
    assert loaded.page.locator("table#layers tbody tr").count() == 0
    assert "baseline build caffe2-nnpack failed" in loaded.page.locator("#baseline-note").inner_text()


def test_effective_flops_above_the_peak_are_labelled_and_explained(result, tmp_path, open_page):
    peak = load_result(result)["device"]["peak_gflops"]["fp32"]

    def winograd_above_peak(doc):
        layer = next(x for x in doc["builds"][0]["layers"] if x["id"] == "enc1.conv2")
        layer["impl"] = "nnpack:wt8x8/precompute"
        fast_ms = layer["flops"] / (2 * peak * 1e6)  # twice the direct-convolution peak
        layer["samples_ms"] = [fast_ms * f for f in (1.0, 0.98, 1.02, 1.01, 0.99)]

    path = _edited(result, tmp_path / "fast.json", winograd_above_peak)
    loaded = open_page(write_run_report([path], tmp_path / "reports", results_root=tmp_path / "store"))
    page = loaded.page
    note = page.locator("#above-peak-note").text_content()  # includes the collapsed list
    assert "enc1.conv2" in note and "Winograd or FFT" in note and "expected" in note
    build = load_result(path)["builds"][0]["name"]
    row = page.locator("table#layers tr[data-layer='enc1.conv2']")
    cell = row.locator("td.above-peak")
    assert cell.count() == 1 and float(cell.get_attribute("data-value")) == pytest.approx(2 * peak, rel=0.05)
    assert "eff." in cell.inner_text()
    assert "Winograd" in cell.locator("abbr.eff").get_attribute("title")
    assert build in note
    assert loaded.errors == [] and all(w > 0 for w in loaded.image_widths())


def _history_store(result: Path, root: Path, slow_layer: str, prefix: str = "run") -> list[str]:
    """Four commits of copies of `result`; from the third on, `slow_layer` of caffe2-nnpack is
    3x slower. That layer's samples are made tight (this shared machine's own are too noisy
    for a significance test on 6 samples); every other layer keeps its measured samples."""
    doc = json.loads(result.read_text())
    commits = [c * 40 for c in "abcd"]
    for i, commit in enumerate(commits):
        d = as_quiet(copy.deepcopy(doc))
        d["harness"]["commit"] = commit
        d["created_utc"] = f"2030-01-0{i + 1}T00:00:00Z"
        for build in d["builds"]:
            for layer in build["layers"]:
                if build["name"] == "caffe2-nnpack" and layer["id"] == slow_layer:
                    base = min(layer["samples_ms"]) * (3 if i >= 2 else 1)
                    layer["samples_ms"] = [base * f for f in (1.0, 1.01, 0.99, 1.02, 0.98, 1.0)]
        save_result(d, root / "runs" / "local" / f"{prefix}{i}.json")
    return commits


def test_commit_range_history_marks_the_regression(result, tmp_path, open_page, capsys):
    root = tmp_path / "store"
    commits = _history_store(result, root, "dec0.conv1")
    assert main(["report", "--commits", f"{commits[0][:10]}..{commits[-1][:10]}", "--results-root", str(root),
                 "--output-dir", str(tmp_path / "reports")]) == 0
    page_path = tmp_path / "reports" / "local" / f"{commits[0][:12]}..{commits[-1][:12]}" / "index.html"
    assert page_path.is_file(), capsys.readouterr()
    loaded = open_page(page_path)
    page = loaded.page
    assert loaded.errors == []
    widths = loaded.image_widths()
    assert len(widths) == 4 and all(w > 0 for w in widths)  # with the history plot and its noise band
    assert page.locator("img[src=\"history-band.png\"]").count() == 1
    marked = page.locator("table#regressions tbody tr").all_inner_texts()
    assert len(marked) == 1 and "caffe2-nnpack" in marked[0] and "dec0.conv1" in marked[0]
    assert commits[2][:12] in marked[0]


def test_comparison_pages_for_two_commits_and_two_builds(result, tmp_path, open_page):
    root = tmp_path / "store"
    commits = _history_store(result, root, "dec0.conv1")
    runs = sorted((root / "runs" / "local").glob("*.json"))
    n_layers = len(load_result(result)["builds"][0]["layers"])

    by_commit = open_page(write_compare_report("a", [runs[0]], "d", [runs[3]], tmp_path / "reports"))
    assert by_commit.errors == []
    sections = by_commit.page.locator("section.comparison")
    assert sections.count() == 2  # one per build present in both
    assert all(w > 0 for w in by_commit.image_widths()) and len(by_commit.image_widths()) == 2
    nnpack = sections.filter(has_text="caffe2-nnpack:")
    assert nnpack.locator("tbody tr").count() == n_layers
    slower = nnpack.locator("tbody tr", has_text="slower").all()
    assert [row.get_attribute("data-layer") for row in slower] == ["dec0.conv1"]
    assert main(["report", "--compare", commits[0], commits[3], "--results-root", str(root),
                 "--output-dir", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "local" / f"compare-{commits[0][:12]}-vs-{commits[3][:12]}" / "index.html").is_file()

    by_build = open_page(write_compare_report("caffe2-nnpack", [result], "torch", [result],
                                              tmp_path / "reports", builds=True))
    assert by_build.errors == []
    assert by_build.page.locator("section.comparison tbody tr").count() == n_layers
    header = by_build.page.locator("section.comparison th[data-col='5'] button")  # speedup
    header.click()
    values = _numbers(by_build.column("section.comparison table", 5))
    assert len(values) == n_layers and values == sorted(values)
    assert all(w > 0 for w in by_build.image_widths())


@pytest.fixture(scope="module")
def second_network(tmp_path_factory) -> Path:
    """A real run of another network (a small SqueezeNet: fire modules, 1x1 and 3x3 convs)."""
    return pytorch_run(tmp_path_factory.mktemp("squeeze") / "squeeze.json", "squeezenet1.1-small")


def test_networks_are_listed_side_by_side_each_with_its_own_page(result, second_network, tmp_path, open_page, capsys):
    assert main(["report", str(result), str(second_network), "--output-dir", str(tmp_path / "reports"),
                 "--results-root", str(tmp_path / "store"), "--name", "both"]) == 0
    page_path = tmp_path / "reports" / "local" / "both" / "index.html"
    assert f"report written to {page_path}" in capsys.readouterr().out
    loaded = open_page(page_path)
    page = loaded.page
    assert loaded.errors == []
    rows = page.locator("table#networks tbody tr")
    assert [rows.nth(i).get_attribute("data-model") for i in range(rows.count())] == \
        ["unet-tiny", "squeezenet1.1-small"]
    for i, path in enumerate((result, second_network)):
        doc = load_result(path)
        cells = rows.nth(i).locator("td")
        # the baseline's median, then torch's median and its speedup, from each file's samples
        e2e = {b["name"]: sorted(b["e2e"]["samples_ms"]) for b in doc["builds"]}
        assert float(cells.nth(3).get_attribute("data-value")) == pytest.approx(float(np.median(e2e["caffe2-nnpack"])))
        assert float(cells.nth(4).get_attribute("data-value")) == pytest.approx(float(np.median(e2e["torch"])))
        assert "×" in cells.nth(5).inner_text()
    # each network's own report, linked from its row
    rows.nth(1).locator("a").click()
    page.wait_for_load_state("load")
    assert page.locator("h1").inner_text().startswith("squeezenet1.1-small on")
    assert page.locator("table#layers tbody tr").count() == len(load_result(second_network)["builds"][0]["layers"])
    assert loaded.errors == []


def test_compare_and_report_take_a_model_list(result, second_network, tmp_path, open_page, capsys):
    root = tmp_path / "store"
    commits = _history_store(result, root, "dec0.conv1")
    assert _history_store(second_network, root, "fire2.expand3x3", prefix="squeeze") == commits
    models = "unet-tiny,squeezenet1.1-small"
    code = main(["compare", commits[0], commits[3], "--models", models, "--results-root", str(root)])
    out = capsys.readouterr().out
    assert code == 1  # a regression in either network fails the step
    tiny, squeeze = out.split("## squeezenet1.1-small")
    assert "## unet-tiny" in tiny
    assert "Regressions: caffe2-nnpack dec0.conv1" in tiny
    assert "Regressions: caffe2-nnpack fire2.expand3x3" in squeeze
    html = tmp_path / "compare.html"
    assert main(["compare", commits[0], commits[3], "--models", models, "--results-root", str(root),
                 "--format", "html", "--output", str(html), "--exit-zero"]) == 0
    loaded = open_page(html)
    assert loaded.page.locator("section").count() == 2 and loaded.errors == []
    assert main(["report", "--commits", f"{commits[0]}..{commits[3]}", "--models", models,
                 "--results-root", str(root), "--output-dir", str(tmp_path / "reports")]) == 0
    page_path = tmp_path / "reports" / "local" / f"{commits[0][:12]}..{commits[3][:12]}" / "index.html"
    networks = open_page(page_path)
    assert networks.page.locator("table#networks tbody tr").count() == 2 and networks.errors == []
    assert main(["compare", commits[0], commits[3], "--models", "unet-tiny,nosuchnet"]) == 2
    assert "unknown model 'nosuchnet'" in capsys.readouterr().err


def test_screenshot_option_writes_a_png(result, tmp_path):
    png = tmp_path / "shot.png"
    assert main(["report", str(result), "--output-dir", str(tmp_path / "r"), "--results-root",
                 str(tmp_path / "store"), "--screenshot", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1400  # IHDR width: the requested window


@pytest.mark.parametrize("args, message", [
    ([], "give result files, --commits A..B or --compare A B"),
    (["missing.json"], "result file not found"),
    (["--commits", "HEAD"], "a commit range is written A..B"),
    (["--commits", "ffffffffff..eeeeeeeeee"], "no stored results"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    assert main(["report", *args, "--results-root", str(tmp_path), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_build_to_compare_is_a_clear_error(result, tmp_path, capsys):
    assert main(["report", str(result), "--compare", "caffe2-nnpack", "tvm", "--output-dir", str(tmp_path)]) == 2
    assert "build tvm is not in" in capsys.readouterr().err


def test_missing_or_failed_baseline_is_said_not_hidden(result, tmp_path, open_page):
    page_path = write_run_report([result], tmp_path / "r", baseline="tvm", results_root=tmp_path / "store")
    loaded = open_page(page_path)
    assert "baseline build tvm is not in these results" in loaded.page.locator("#baseline-note").inner_text()
    assert loaded.page.locator("table#layers th", has_text="speedup").count() == 0
    assert loaded.errors == []


def test_result_without_bandwidth_still_reports(result, tmp_path):
    path = _edited(result, tmp_path / "old.json", lambda d: d["system"].pop("memory_bandwidth"))
    html = write_run_report([path], tmp_path / "r", results_root=tmp_path / "store").read_text()
    assert "not measured in this result" in html and "ceiling: not drawn" in html


def test_bandwidth_is_measured_and_recomputed_from_raw_times(result):
    measured = measure_memory_bandwidth(threads=2, buffer_mib=8, repeats=3)
    assert len(measured["samples_s"]) == 3 and all(s > 0 for s in measured["samples_s"])
    assert bandwidth_gb_s({"memory_bandwidth": measured}) == pytest.approx(measured["gb_s"])
    stored = load_result(result)["system"]["memory_bandwidth"]  # the runner records it
    assert stored["bytes_per_pass"] == 2 * 64 * 2**20 and bandwidth_gb_s({"memory_bandwidth": stored}) > 0


def test_speedup_interval_is_reproducible_and_brackets_the_ratio():
    same = speedup([1.0, 1.1, 0.9, 1.05, 0.95], [1.0, 1.1, 0.9, 1.05, 0.95])
    assert same.ratio == 1.0 and same.low <= 1.0 <= same.high and same.verdict == "same"
    fast = speedup([10, 10.5, 9.5, 10.2, 9.8], [5, 5.2, 4.9, 5.1, 5.0])
    assert fast.verdict == "faster" and fast.low <= fast.ratio <= fast.high and fast.ratio == pytest.approx(2.0)
    assert speedup([3, 4, 5, 6], [1, 2, 9, 4]) == speedup([3, 4, 5, 6], [1, 2, 9, 4])


def test_an_emulated_result_says_so_on_the_page_and_in_the_table_title(result, tmp_path, open_page):
    from rich.console import Console  # noqa: PLC0415

    from harness.devices.config import EMULATED_LABEL  # noqa: PLC0415
    from harness.report.table import layer_table  # noqa: PLC0415

    def emulated(doc):
        doc["device"]["emulated"] = True
        doc["device"]["name"] = "pi5" + EVIL

    path = _edited(result, tmp_path / "emulated.json", emulated)
    page = open_page(write_run_report([path], tmp_path / "reports", results_root=tmp_path / "store")).page
    notice = page.locator("#emulated-notice")
    assert notice.is_visible()
    assert EMULATED_LABEL in notice.inner_text() and "not a Raspberry Pi's" in notice.inner_text()
    assert ("pi5" + EVIL) in notice.inner_text()  # escaped: shown as text, not run
    console = Console(width=400, record=True)
    console.print(layer_table(load_result(path)))
    assert EMULATED_LABEL in console.export_text()
    # A real device's page and table carry neither.
    plain = open_page(write_run_report([result], tmp_path / "plain", results_root=tmp_path / "store")).page
    assert plain.locator("#emulated-notice").count() == 0
    console = Console(width=400, record=True)
    console.print(layer_table(load_result(result)))
    assert EMULATED_LABEL not in console.export_text()
