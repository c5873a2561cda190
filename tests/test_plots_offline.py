"""`dvc plots show` / `dvc plots diff` must render without network access.

dvc-render's default page loads vega, vega-lite and vega-embed from a CDN. The repo
points `plots.html_template` (.dvc/config) at plots/offline_template.html (committed, so
a fresh clone draws offline), built by plots/build_template.py from the vega bundle of the
pinned vl-convert-python wheel, with the scripts inlined. These tests build that template,
run real `dvc plots show/diff` in throwaway git+DVC repos (a synthetic one, and one with
the project's own dvc.yaml plots and committed curves), open the page in headless Chromium
with every network request forced to fail, and check in the DOM (and the screenshot) that
each chart was drawn, once, with its marks; `dvc plots show --json` gives the specs'
fields, types and titles.

Needs: the Debian `chromium` package (.ci/system-deps.sh) for the `browser` tests. Without
it they skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLOTS_DIR = ROOT / "plots"
BUILD_SCRIPT = PLOTS_DIR / "build_template.py"
TEMPLATE = PLOTS_DIR / "offline_template.html"
DVC = [sys.executable, "-m", "dvc"]

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    # Simulate an offline machine: no name resolves and any proxied request dies, so
    # a page that still needs the CDN stays blank (see the control test below).
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--window-size=1000,900",
    # Virtual time: the dump is taken once the page is idle (at most 10 s of page time).
    "--virtual-time-budget=10000",
]

PLOTS_YAML = """\
plots:
  - loss:
      x: step
      y:
        metrics/curve_train.csv: loss
        metrics/curve_val.csv: val_loss
      title: Loss
  - lr:
      x: step
      y:
        metrics/curve_train.csv: lr
      title: Learning rate
"""
TRAIN_STEPS = list(range(0, 200, 10))  # 20 rows
VAL_STEPS = list(range(0, 200, 50))  # 4 rows


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _require(ok: bool, reason: str) -> None:
    if not ok:
        if _in_ci():
            pytest.fail(f"{reason} (CI=true: missing prerequisites are an error)")
        pytest.skip(reason)


def _chromium() -> str | None:
    override = os.environ.get("CHROMIUM_BIN")
    if override:
        return shutil.which(override)
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(cmd, cwd, env=None, timeout=180) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}) in {cwd}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def _project_template_setting() -> str:
    """plots.html_template as committed in the project's .dvc/config."""
    proc = subprocess.run(
        [*DVC, "config", "--project", "plots.html_template"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    assert proc.returncode == 0 and proc.stdout.strip(), (
        "plots.html_template is not set in .dvc/config; run "
        "`dvc config plots.html_template ../plots/offline_template.html`\n" + proc.stderr
    )
    return proc.stdout.strip()


# --------------------------------------------------------------------------- parsing


class PlotDom(HTMLParser):
    """Collects, per dvc plot div (<div id=...> around each vegaEmbed call), what was drawn."""

    def __init__(self, plot_ids):
        super().__init__(convert_charrefs=True)
        self.plot_ids = set(plot_ids)
        self.plots = {
            pid: {"found": False, "embed": None, "error": None, "svg": 0, "canvas": 0,
                  "lines": [], "bars": 0, "texts": []}
            for pid in plot_ids
        }
        self.remote_refs = []  # (tag, attr, value) pointing at http(s) or //host
        self._current = None
        self._div_depth = 0
        self._enter_depth = None
        self._in_text = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for attr in ("src", "href"):
            val = (a.get(attr) or "").strip().lower()
            if tag in ("script", "link", "img", "iframe") and re.match(r"(https?:)?//", val):
                self.remote_refs.append((tag, attr, a.get(attr)))
        if tag == "div":
            self._div_depth += 1
            if self._current is None and a.get("id") in self.plot_ids:
                self._current = a["id"]
                self._enter_depth = self._div_depth
                plot = self.plots[self._current]
                plot["found"] = True
                plot["embed"] = a.get("data-vega-embed")
                plot["error"] = a.get("data-vega-error")
        if self._current is None:
            return
        plot = self.plots[self._current]
        # vega's own surface is <svg class="marks"> / <canvas class="marks">; other svgs
        # (e.g. the vega-embed actions icon) do not count.
        is_marks = "marks" in (a.get("class") or "").split()
        if tag == "svg" and is_marks:
            plot["svg"] += 1
        elif tag == "canvas" and is_marks:
            plot["canvas"] += 1
        elif tag == "path" and a.get("aria-roledescription") == "line mark":
            d = a.get("d") or ""
            plot["lines"].append(
                {"label": a.get("aria-label") or "", "vertices": len(re.findall(r"[ML]", d))}
            )
        elif a.get("aria-roledescription") == "bar":
            plot["bars"] += 1
        elif tag == "text":
            self._in_text = True
            plot["texts"].append("")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag == "div":
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag == "text":
            self._in_text = False
        if tag == "div":
            if self._current is not None and self._div_depth == self._enter_depth:
                self._current = None
            self._div_depth -= 1

    def handle_data(self, data):
        if self._in_text and self._current is not None:
            self.plots[self._current]["texts"][-1] += data


def _line_label_fields(label: str) -> dict[str, str]:
    # vega's aria-label for a line: "step: 0; y: 3.5; rev: v1; filename::field: curve_train.csv::loss"
    out = {}
    for part in label.split("; "):
        key, sep, val = part.partition(": ")
        if sep:
            out[key] = val
    return out


def _png_rgb(png: Path):
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes); return (width, height, rows)."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if ctype == b"IHDR":
            width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color_type in (2, 6) and not interlace, (
                f"unexpected PNG format depth={depth} color_type={color_type} interlace={interlace}"
            )
            bpp = 3 if color_type == 2 else 4
        elif ctype == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if ftype:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up = prev[i]
                if ftype == 1:
                    line[i] = (line[i] + left) & 0xFF
                elif ftype == 2:
                    line[i] = (line[i] + up) & 0xFF
                elif ftype == 3:
                    line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
                elif ftype == 4:
                    ul = prev[i - bpp] if i >= bpp else 0
                    p = left + up - ul
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
                    line[i] = (line[i] + pred) & 0xFF
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return width, height, rows


def _revision_colour_pixels(png: Path, n_revs: int) -> list[int]:
    """Pixels in each of dvc's first n_revs revision colours (lines are drawn in them)."""
    from dvc_render.vega import OPTIONAL_ANCHOR_RANGES

    palette = [
        tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))
        for c in OPTIONAL_ANCHOR_RANGES["color"][:n_revs]
    ]
    counts = [0] * len(palette)
    _, _, rows = _png_rgb(png)
    for row in rows:
        for px in row:
            if px == (255, 255, 255):
                continue
            for k, col in enumerate(palette):
                if max(abs(px[0] - col[0]), abs(px[1] - col[1]), abs(px[2] - col[2])) <= 40:
                    counts[k] += 1
    return counts


def _assert_screenshot_drawn(shot: Path, revs: list[str]) -> None:
    counts = _revision_colour_pixels(shot, len(revs))
    # A chart's lines give ~1000+ such pixels; a blank page 0, legend dots alone ~100.
    for rev, n in zip(revs, counts):
        assert n >= 300, f"{shot}: only {n} pixels in the colour of revision {rev}; counts {counts}"


# -------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = _chromium()
    _require(exe is not None, "headless Chromium not found (apt-get install chromium, see .ci/system-deps.sh)")
    return exe


@pytest.fixture(scope="module")
def offline_template(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("template") / "offline_template.html"
    _run([sys.executable, str(BUILD_SCRIPT), "-o", str(out)], cwd=ROOT)
    return out


def _write_curves(repo: Path, scale: float) -> None:
    metrics = repo / "metrics"
    metrics.mkdir(exist_ok=True)
    with open(metrics / "curve_train.csv", "w", encoding="utf8") as f:
        f.write("step,loss,lr\n")
        for s in TRAIN_STEPS:
            f.write(f"{s},{scale * 3 * math.exp(-s / 60) + 0.5:.5f},{1e-4 * min(1.0, s / 50):.6g}\n")
    with open(metrics / "curve_val.csv", "w", encoding="utf8") as f:
        f.write("step,val_loss\n")
        for s in VAL_STEPS:
            f.write(f"{s},{scale * 3 * math.exp(-s / 70) + 0.6:.5f}\n")


GIT = ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]


def _repo_env(repo: Path) -> dict:
    """The environment of a throwaway git+DVC repo: no analytics, its own site cache, a git identity, no user
    or system git config."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(repo.parent / "dvc_site_cache"),
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory, offline_template):
    """git+DVC repo with tags v1 and v2 holding different curves, configured like ROOT."""
    repo = tmp_path_factory.mktemp("plots_repo")
    env, git = _repo_env(repo), GIT
    _run([*git, "init", "-q"], repo, env)
    _run([*DVC, "init", "-q"], repo, env)
    # Same setting as the project's .dvc/config (relative paths resolve against .dvc/),
    # with the freshly built template at the place it resolves to.
    setting = _project_template_setting()
    if os.path.isabs(setting):  # test_project_config_... flags that; keep this test usable
        setting = "../plots/offline_template.html"
    target = Path(os.path.normpath(repo / ".dvc" / setting))
    assert target.is_relative_to(repo), f"plots.html_template={setting!r} points outside the repo"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(offline_template, target)
    _run([*DVC, "config", "plots.html_template", setting], repo, env)
    (repo / "dvc.yaml").write_text(PLOTS_YAML, encoding="utf8")
    _write_curves(repo, scale=1.0)
    _run([*git, "add", "-A"], repo, env)
    _run([*git, "commit", "-q", "-m", "v1"], repo, env)
    _run([*git, "tag", "v1"], repo, env)
    _write_curves(repo, scale=0.6)
    _run([*git, "commit", "-q", "-am", "v2"], repo, env)
    _run([*git, "tag", "v2"], repo, env)
    return repo, env


def _render(chromium: str, page: Path, workdir: Path, name: str):
    """Open page in headless Chromium (network blocked); return (dumped DOM, screenshot path)."""
    profile = workdir / f"chromium-profile-{name}"
    profile.mkdir()
    shot = workdir / f"{name}.png"
    proc = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "HOME": str(workdir)},
    )
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    dom = proc.stdout
    assert "<html" in dom.lower(), f"no DOM dumped:\n{proc.stderr[-4000:]}"
    (workdir / f"{name}.dom.html").write_text(dom, encoding="utf8")
    assert shot.is_file(), f"no screenshot written:\n{proc.stderr[-4000:]}"
    return dom, shot


def _parse(dom: str, plot_ids=("loss", "lr")) -> PlotDom:
    parser = PlotDom(plot_ids)
    parser.feed(dom)
    parser.close()
    return parser


def _assert_static_page_offline(page: Path) -> None:
    html = page.read_text(encoding="utf8")
    remote = re.findall(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]*""",
                        html, re.I)
    assert not remote, f"{page} still loads remote resources: {remote}"
    assert "cdn.jsdelivr.net" not in html
    assert html.count("vegaEmbed('#") == 2, "expected the two dvc plot divs in the page"


def _assert_drawn(parsed: PlotDom, revs: set[str]) -> None:
    assert not parsed.remote_refs, f"rendered DOM references remote resources: {parsed.remote_refs}"
    for pid, plot in parsed.plots.items():
        assert plot["found"], f"plot div #{pid} missing from rendered page"
        assert plot["embed"] == "ok", f"#{pid}: vega-embed state {plot['embed']!r}, error {plot['error']!r}"
        assert plot["svg"] == 1, \
            f"#{pid}: expected one vega <svg class=marks>, got {plot['svg']} (canvas: {plot['canvas']})"
        assert plot["lines"], f"#{pid}: no line marks drawn"

    def series(pid):
        seen = {}
        for line in parsed.plots[pid]["lines"]:
            f = _line_label_fields(line["label"])
            key = (f.get("rev"), f.get("filename::field"))
            seen[key] = max(seen.get(key, 0), line["vertices"])
        return seen

    loss = series("loss")
    for rev in revs:
        train = loss.get((rev, "curve_train.csv::loss"), 0)
        val = loss.get((rev, "curve_val.csv::val_loss"), 0)
        assert train >= len(TRAIN_STEPS), f"loss/{rev}: train curve has {train} vertices; drawn: {loss}"
        assert val >= len(VAL_STEPS), f"loss/{rev}: val curve has {val} vertices; drawn: {loss}"
    lr = series("lr")
    for rev in revs:
        got = max((v for (r, _), v in lr.items() if r == rev), default=0)
        assert got >= len(TRAIN_STEPS), f"lr/{rev}: curve has {got} vertices; drawn: {lr}"
    assert {r for r, _ in loss} == revs, f"unexpected revisions in loss plot: {sorted(loss)}"
    titles = " ".join(parsed.plots["loss"]["texts"] + parsed.plots["lr"]["texts"])
    assert "Loss" in titles and "Learning rate" in titles, titles


# ----------------------------------------------------------------------------- tests


def test_project_config_points_at_offline_template():
    setting = _project_template_setting()
    resolved = Path(os.path.normpath(ROOT / ".dvc" / setting))  # dvc resolves it against .dvc/
    assert resolved == PLOTS_DIR / "offline_template.html", (
        f"plots.html_template={setting!r} resolves to {resolved}; dvc joins relative "
        "values with .dvc/, so use ../plots/offline_template.html"
    )


def test_template_is_self_contained(offline_template):
    html = offline_template.read_text(encoding="utf8")
    assert html.count("{plot_divs}") == 1
    assert "{scripts}" not in html, "the scripts placeholder would pull the CDN tags back in"
    assert not re.search(r"""\b(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    import vl_convert

    versions = re.search(r"/\* (vega@.*?) \*/", html)
    assert versions, "no version comment in front of the inlined bundle"
    assert versions.group(1) == (f"vega@{vl_convert.get_vega_version()}, vega-lite@5.21, "
                                 f"vega-embed@{vl_convert.get_vega_embed_version()} "
                                 f"(vl-convert-python {vl_convert.__version__})"), versions.group(1)


def test_committed_template_is_current(offline_template):
    """A fresh clone draws offline before any set-up: the committed page is what the pinned wheel builds."""
    assert TEMPLATE.is_file(), f"{TEMPLATE} is not in the checkout"
    assert TEMPLATE.read_bytes() == offline_template.read_bytes(), (
        f"{TEMPLATE} differs from what plots/build_template.py builds with this vl-convert-python: "
        "run `make plots-setup` and commit it")


@pytest.mark.browser
def test_cdn_page_is_blank_offline(chromium, plots_repo, tmp_path):
    """Control: the stock template must NOT render here, else the harness proves nothing."""
    from dvc_render.html import PAGE_HTML

    repo, env = plots_repo
    stock = tmp_path / "stock_template.html"
    stock.write_text(PAGE_HTML, encoding="utf8")
    out = tmp_path / "cdn_plots"
    _run([*DVC, "plots", "show", "-o", str(out), "--html-template", str(stock)], repo, env)
    dom, shot = _render(chromium, out / "index.html", tmp_path, "cdn")
    assert _revision_colour_pixels(shot, 1) == [0], "stock page drew something offline"
    parsed = _parse(dom)
    assert parsed.plots["loss"]["found"]
    assert parsed.remote_refs, "stock page should reference the CDN"
    for pid, plot in parsed.plots.items():
        assert plot["svg"] == 0 and plot["canvas"] == 0 and not plot["lines"], (
            f"#{pid} rendered although the network is blocked: the offline check is not effective"
        )


@pytest.mark.browser
def test_plots_show_renders_offline(chromium, plots_repo, tmp_path):
    repo, env = plots_repo
    out = tmp_path / "show"
    _run([*DVC, "plots", "show", "-o", str(out)], repo, env)  # template via plots.html_template
    page = out / "index.html"
    _assert_static_page_offline(page)
    dom, shot = _render(chromium, page, tmp_path, "show")
    _assert_drawn(_parse(dom), revs={"workspace"})
    _assert_screenshot_drawn(shot, ["workspace"])


@pytest.mark.browser
def test_plots_diff_renders_both_revisions_offline(chromium, plots_repo, tmp_path):
    repo, env = plots_repo
    out = tmp_path / "diff"
    _run([*DVC, "plots", "diff", "v1", "v2", "-o", str(out)], repo, env)
    page = out / "index.html"
    _assert_static_page_offline(page)
    spec_revs = set(re.findall(r'"rev": "([^"]+)"', page.read_text(encoding="utf8")))
    assert {"v1", "v2"} <= spec_revs, f"revisions in plot data: {spec_revs}"
    dom, shot = _render(chromium, page, tmp_path, "diff")
    _assert_drawn(_parse(dom), revs={"v1", "v2"})
    _assert_screenshot_drawn(shot, ["v1", "v2"])  # dvc colours revisions in order


# ------------------------------------------------------------ the project's own plots

# dvc.yaml's top-level plots: id -> (mark, x field, x type, y field(s), y type)
PROJECT_PLOTS = {
    "loss": ("line", "step", "quantitative", ("loss", "val_loss"), "quantitative"),
    "learning_rate": ("line", "step", "quantitative", ("lr",), "quantitative"),
    "val_top1": ("line", "step", "quantitative", ("val_top1",), "quantitative"),
    "top1_by_frequency": ("bar", "top1", "quantitative", ("bucket",), "nominal"),
    "top5_by_frequency": ("bar", "top5", "quantitative", ("bucket",), "nominal"),
}
PROJECT_CSVS = ("curve_train.csv", "curve_val.csv", "eval_by_frequency.csv")
KEEP = {"step", "bucket", "tokens"}  # columns a second revision keeps as they are


def _write_project_csvs(repo: Path, factor: float) -> None:
    """The committed curves and buckets of the default run, every figure times factor (a second revision)."""
    (repo / "metrics").mkdir(exist_ok=True)
    for name in PROJECT_CSVS:
        with open(ROOT / "metrics" / name, newline="", encoding="utf8") as f:
            rows = list(csv.DictReader(f))
        with open(repo / "metrics" / name, "w", newline="", encoding="utf8") as f:
            out = csv.DictWriter(f, fieldnames=list(rows[0]))
            out.writeheader()
            out.writerows({k: v if k in KEEP else f"{float(v) * factor:.6g}" for k, v in r.items()} for r in rows)


def _csv_rows(name: str) -> list[dict]:
    with open(ROOT / "metrics" / name, newline="", encoding="utf8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def project_plots_repo(tmp_path_factory):
    """A git+DVC repo with the project's dvc.yaml, params.yaml, plot template and committed template, and the
    committed curves at tag v1 and 0.8 times them at v2."""
    repo = tmp_path_factory.mktemp("project_plots")
    env, git = _repo_env(repo), GIT
    _run([*git, "init", "-q"], repo, env)
    _run([*DVC, "init", "-q"], repo, env)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    (repo / "plots").mkdir()
    shutil.copy2(TEMPLATE, repo / "plots" / TEMPLATE.name)  # as committed: no set-up step
    _run([*DVC, "config", "plots.html_template", _project_template_setting()], repo, env)
    _write_project_csvs(repo, 1.0)
    _run([*git, "add", "-A"], repo, env)
    _run([*git, "commit", "-q", "-m", "v1"], repo, env)
    _run([*git, "tag", "v1"], repo, env)
    _write_project_csvs(repo, 0.8)
    _run([*git, "commit", "-q", "-am", "v2"], repo, env)
    _run([*git, "tag", "v2"], repo, env)
    return repo, env


def _y_encodings(spec: dict) -> list[dict]:
    """Every y encoding in a (layered) vega-lite spec."""
    found = [spec["encoding"]["y"]] if "y" in spec.get("encoding", {}) else []
    for layer in spec.get("layer", []):
        found += _y_encodings(layer)
    return found


def test_project_plots_spec(project_plots_repo):
    """Each chart of dvc.yaml once, with its real x (the step, or the accuracy for bars), types and titles."""
    repo, env = project_plots_repo
    data = json.loads(_run([*DVC, "plots", "show", "--json"], repo, env).stdout)["data"]
    assert sorted(data) == sorted(PROJECT_PLOTS), f"charts drawn: {sorted(data)}"  # nothing else, nothing twice
    for pid, (mark, x_field, x_type, y_fields, y_type) in PROJECT_PLOTS.items():
        (item,) = data[pid]
        spec = item["content"]
        assert item["type"] == "vega" and spec["title"]["text"], pid
        x = spec["encoding"]["x"]
        assert (x["field"], x["type"]) == (x_field, x_type) and x["title"], (pid, x)
        ys = _y_encodings(spec)
        assert ys and all(y["type"] == y_type and y["title"] for y in ys), (pid, ys)
        values = spec["data"]["values"]
        if mark == "bar":
            assert spec["mark"]["type"] == "bar" and x["scale"]["domain"] == [0, 1] and "%" in x["axis"]["format"]
            assert {y["field"] for y in ys} == {"bucket"}
            buckets = [r["bucket"] for r in _csv_rows("eval_by_frequency.csv")]
            assert [v["bucket"] for v in values] == buckets and all(0 <= float(v[x_field]) <= 1 for v in values)
        else:
            if len(y_fields) == 1:
                assert {y["field"] for y in ys} == set(y_fields), (pid, ys)
            else:  # several series in one chart: DVC draws one inferred y, told apart by file and field
                series = {v["filename::field"].split("::")[1] for v in values}
                assert series == set(y_fields), (pid, series)
            # the real optimizer steps, not the row number
            steps = {r["step"] for name in PROJECT_CSVS[:2] for r in _csv_rows(name) if set(y_fields) & set(r)}
            assert {v["step"] for v in values} == steps and min(map(int, steps)) >= 100, (pid, sorted(steps))
            assert x["title"] == "optimizer step"


@pytest.mark.browser
def test_project_plots_diff_draws_every_chart(chromium, project_plots_repo, tmp_path):
    """`dvc plots diff v1 v2` of the project's charts, offline: lines and bars of both revisions, visibly."""
    repo, env = project_plots_repo
    out = tmp_path / "project_diff"
    _run([*DVC, "plots", "diff", "v1", "v2", "-o", str(out)], repo, env)
    page = out / "index.html"
    html = page.read_text(encoding="utf8")
    assert "cdn.jsdelivr.net" not in html and html.count("vegaEmbed('#") == len(PROJECT_PLOTS)
    dom, shot = _render(chromium, page, tmp_path, "project_diff")
    parsed = _parse(dom, tuple(PROJECT_PLOTS))
    assert not parsed.remote_refs, parsed.remote_refs
    n_buckets = len(_csv_rows("eval_by_frequency.csv"))
    for pid, (mark, *_rest) in PROJECT_PLOTS.items():
        plot = parsed.plots[pid]
        assert plot["found"] and plot["embed"] == "ok" and plot["svg"] == 1, (pid, plot["embed"], plot["error"])
        texts = " ".join(plot["texts"])
        assert "by step" in texts or "by how frequent" in texts, (pid, texts)
        if mark == "bar":
            assert plot["bars"] == 2 * n_buckets, f"#{pid}: {plot['bars']} bars, want {n_buckets} per revision"
            assert "100%" in texts and "0%" in texts, (pid, texts)  # the accuracy axis, 0 to 100 %
        else:
            revs = {_line_label_fields(line["label"]).get("rev") for line in plot["lines"] if line["vertices"] >= 2}
            assert revs == {"v1", "v2"}, f"#{pid}: lines drawn for {revs}"
    _assert_screenshot_drawn(shot, ["v1", "v2"])
