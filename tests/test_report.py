"""``seqkd report``: a page about a run folder built from files shaped like a real run's (no training)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from seqkd.cli import main

BLEU_SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
CHRF_SIGNATURE = "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"
RECIPE_LINE = "description: 'Quickstart <tiny> & \"quoted\": small teacher, then students'"


class Page(HTMLParser):
    """The page's tables (rows of cell texts), <img> sources, link targets and <pre> texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.pres: list[str] = []
        self._cell: list[str] | None = None
        self._pre: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "pre":
            self._pre = []
        elif tag == "img":
            self.images.append(found["src"] or "")
        for name in ("href", "src"):
            if found.get(name):
                self.links.append(found[name] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None

    def handle_data(self, data: str) -> None:
        for sink in (self._cell, self._pre):
            if sink is not None:
                sink.append(data)


def write_stage(
    run: Path, name: str, *, status: str = "done", method: str = "supervised", teachers: tuple[str, ...] = (),
    report: dict | None = None, train_steps: tuple[int, ...] = (50, 100, 150, 200), scale: float = 1.0,
) -> None:
    """A stage folder with the files a real stage writes, in their real shapes."""
    folder = run / name
    folder.mkdir(parents=True)
    (folder / "stage.json").write_text(json.dumps({
        "hash": f"{name:x<16}"[:16], "stage": name, "recipe": "recipes/bible-en-es/quickstart.yaml", "status": status,
        "parts": {"method": method, "teachers": list(teachers), "training": {"max_steps": 200, "lr": 0.002}},
    }))
    lines = []
    for step in train_steps:
        lines.append({"kind": "train", "step": step, "loss": scale * 7 / (1 + step / 100), "nll": 6.9, "lr": 0.002 * min(1, step / 100),
                      "grad_norm": 0.46, "tokens_per_s": 4500.0 / scale})
        if step % 100 == 0:
            lines.append({"kind": "valid", "step": step, "nll": scale * 4.4 / (1 + step / 200), "best_nll": 4.4})
    text = "".join(json.dumps(line) + "\n" for line in lines)
    if status == "running":
        text += '{"kind": "train", "step": 25'  # a torn last line: the stage is being written
    (folder / "metrics.jsonl").write_text(text)
    (folder / "config.yaml").write_text(f"{RECIPE_LINE}\noutput:\n  dir: {run}\nstages:\n- name: {name}\n  method: {method}\n")
    if report is not None:
        (folder / "report.json").write_text(json.dumps({"evaluation_hash": "9e5a9e3bc295e443", "metrics": report}, indent=2))


def translation_report(bleu: float, chrf: float, speed: float) -> dict:
    return {"split": "test", "sentences": 400, "beam_size": 4, "bleu": bleu, "chrf": chrf, "bleu_signature": BLEU_SIGNATURE,
            "chrf_signature": CHRF_SIGNATURE, "sentences_per_second": speed}


def write_model(folder: Path, sizes: tuple[int, int]) -> None:
    import torch

    from seqkd.checkpoint import save_model

    embed = torch.zeros(sizes)
    state = {"embed.weight": embed, "output.weight": embed, "layer.weight": torch.zeros(sizes[1], sizes[1]),
             "steps": torch.zeros(3, dtype=torch.long)}  # tied output counts once; an integer buffer not at all
    save_model(folder / "model.pt", task="translation", model_config={}, vocabulary="spm", state_dict=state)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A quickstart-shaped run: a teacher, a finished student, an unfinished one, a damaged report."""
    run = tmp_path_factory.mktemp("report") / "quickstart"
    write_stage(run, "teacher", report=translation_report(7.5, 20.2, 51.3), train_steps=(50, 100, 150, 200, 250))
    write_stage(run, "word_kd", method="word_kd", teachers=("teacherxxxxxxxxx",), report=translation_report(5.93, 17.45, 112.83), scale=0.6)
    write_stage(run, "baseline", status="running", train_steps=(50, 100))
    write_stage(run, "broken", report=None)
    (run / "broken" / "report.json").write_text('{"evaluation_hash": "9e5a')
    write_model(run / "teacher", (1000, 192))
    write_model(run / "word_kd", (1000, 128))
    (run / "_shared").mkdir()  # not a stage
    return run


def report(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["report", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def check_page(page: Path) -> Page:
    """The page parses, and every image it shows is a non-empty PNG beside it or a PNG data URI."""
    text = page.read_text(encoding="utf-8")
    parsed = Page()
    parsed.feed(text)
    parsed.close()
    assert parsed.images
    for src in parsed.images:
        if src.startswith("data:"):
            assert src.startswith("data:image/png;base64,") and base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
            continue
        image = page.parent / src
        assert image.is_file() and image.stat().st_size > 1000, src
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    # readable offline: nothing is fetched from anywhere
    assert "http://" not in text and "https://" not in text
    assert all(link.startswith("#") or "://" not in link for link in parsed.links)
    return parsed


def rows_by_stage(parsed: Page) -> dict[str, dict[str, str]]:
    header, *rows = parsed.tables[0]
    return {row[0]: dict(zip(header, row)) for row in rows}


@pytest.fixture(scope="module")
def page(run_folder: Path) -> tuple[Path, str]:
    """The run's page, written once for the tests that read it, and what the command printed."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(run_folder)]) == 0
    return run_folder / "report" / "index.html", out.getvalue()


def test_report_shows_every_stage_with_its_metrics(page: tuple[Path, str]) -> None:
    page, printed = page
    assert printed.strip() == str(page)
    parsed = check_page(page)
    assert {"loss.png", "lr.png", "tokens_per_s.png", "valid_nll.png", "quality_bleu.png"} <= set(parsed.images)

    stages = rows_by_stage(parsed)
    assert list(stages) == ["teacher", "baseline", "broken", "word_kd"]  # teachers first, the report folder is no stage
    assert stages["teacher"]["bleu"] == "7.50" and stages["teacher"]["chrf"] == "20.20" and stages["teacher"]["sent/s"] == "51.3"
    assert stages["teacher"]["role"] == "teacher" and stages["word_kd"]["role"] == "student"
    assert stages["teacher"]["params"] == "0.23M"  # 1000*192 + 192*192, the tied copy once
    assert stages["word_kd"]["bleu"] == "5.93" and stages["word_kd"]["speed vs teacher"] == "2.20×"
    assert stages["baseline"]["state"].startswith("unfinished (step 100/200)")
    assert "1 line(s) skipped" in stages["baseline"]["state"] and stages["baseline"]["bleu"] == "–"
    assert "report.json unreadable" in stages["broken"]["state"]

    signatures = {row[0]: row for row in parsed.tables[1][1:]}
    assert signatures["bleu"][1] == BLEU_SIGNATURE and signatures["chrf"][1] == CHRF_SIGNATURE
    assert signatures["bleu"][2] == "every evaluated stage"
    assert any(RECIPE_LINE in pre for pre in parsed.pres)  # escaped on the page, the same text once parsed
    assert RECIPE_LINE not in page.read_text()  # ... so its < > & " never reach the page raw
    assert "Seeds" not in page.read_text()


def test_output_elsewhere_puts_figures_beside_it(run_folder: Path, tmp_path: Path, capsys) -> None:
    before = sorted(run_folder.rglob("*"))
    target = tmp_path / "out" / "run.html"
    code, _, err = report([run_folder, "--output", target], capsys)
    assert code == 0, err
    check_page(target)
    assert (tmp_path / "out" / "loss.png").is_file() and sorted(run_folder.rglob("*")) == before


def test_seed_sweep_shows_mean_and_std(tmp_path: Path, capsys) -> None:
    """The layout `seqkd run --seeds 1,2 --shared teacher --baseline baseline` leaves."""
    run = tmp_path / "sweep"
    write_stage(run, "teacher", report=translation_report(7.5, 20.2, 50.0))
    values = {"baseline": ((5.0, 17.0), (6.0, 18.0)), "word_kd": ((6.0, 18.5), (7.0, 19.5))}
    for name, per_seed in values.items():
        for seed, (bleu, chrf) in enumerate(per_seed, start=1):
            teachers = ("teacherxxxxxxxxx",) if name == "word_kd" else ()
            write_stage(run, f"{name}-s{seed}", method=name if teachers else "supervised", teachers=teachers,
                        report=translation_report(bleu, chrf, 110.0 + seed))
    recipe = {"description": "sweep", "stages": [{"name": n} for n in ("teacher", "baseline-s1", "word_kd-s1", "baseline-s2", "word_kd-s2")]}
    (run / "seeds-quickstart.yaml").write_text(yaml.safe_dump(recipe))

    def spread(per_seed, method):
        rows = [{"seed": i + 1, "bleu": b, "chrf": c} for i, (b, c) in enumerate(per_seed)]
        return {"task": "translation", "method": method, "parameters": 917632, "seeds": rows,
                "mean": {"bleu": sum(b for b, _ in per_seed) / len(per_seed), "chrf": sum(c for _, c in per_seed) / len(per_seed)},
                "std": {"bleu": 0.7071, "chrf": 0.7071}}

    (run / "seeds.json").write_text(json.dumps({
        "recipe": "recipes/bible-en-es/quickstart.yaml", "seeds": [1, 2], "date": "2026-11-26", "baseline": "baseline",
        "stages": {"teacher": {**spread([(7.5, 20.2)], "supervised"), "std": {"bleu": 0.0, "chrf": 0.0}, "parameters": 3499776},
                   "baseline": spread(values["baseline"], "supervised"), "word_kd": spread(values["word_kd"], "word_kd")},
        "paired": {"word_kd": {"per_seed": [{"seed": 1, "bleu": 1.0, "chrf": 1.5}, {"seed": 2, "bleu": 1.0, "chrf": 1.5}],
                               "mean": {"bleu": 1.0, "chrf": 1.5}, "std": {"bleu": 0.0, "chrf": 0.0}}},
    }))
    code, _, err = report([run], capsys)
    assert code == 0, err
    page = run / "report" / "index.html"
    parsed = check_page(page)
    assert "seeds.png" in parsed.images
    assert [row[0] for row in parsed.tables[0][1:]] == ["teacher", "baseline-s1", "baseline-s2", "word_kd-s1", "word_kd-s2"]  # recipe order, seeds together
    assert rows_by_stage(parsed)["word_kd-s2"]["params"] == "0.92M"  # from seeds.json: these folders have no model.pt
    spread_table = next(t for t in parsed.tables if t[0][:3] == ["stage", "method", "seeds"])
    spreads = {row[0]: row for row in spread_table[1:]}
    assert spreads["baseline"][2] == "1, 2" and spreads["baseline"][3] == "5.50 ± 0.71" and spreads["word_kd"][4] == "19.00 ± 0.71"
    assert spreads["teacher"][3] == "7.50 ± 0.00"
    paired = next(t for t in parsed.tables if t[0][0] == "stage" and t[0][1].startswith("Δ"))
    assert paired[1] == ["word_kd", "+1.00 ± 0.00", "+1.50 ± 0.00"]


def test_unfinished_sweep_spread_comes_from_reports(tmp_path: Path, capsys) -> None:
    run = tmp_path / "sweep"
    for seed, bleu in ((1, 5.0), (2, 6.0), (3, 7.0)):
        write_stage(run, f"baseline-s{seed}", report=translation_report(bleu, 18.0, 100.0))
    write_stage(run, "lr-s5", report=translation_report(1.0, 2.0, 3.0))  # a lone -s5 is a stage of that name
    code, _, err = report([run], capsys)
    assert code == 0, err
    parsed = check_page(run / "report" / "index.html")
    spread_table = next(t for t in parsed.tables if t[0][:3] == ["stage", "method", "seeds"])
    spreads = {row[0]: row for row in spread_table[1:]}
    assert spreads["baseline"][2] == "1, 2, 3" and spreads["baseline"][3] == "6.00 ± 1.00" and spreads["lr-s5"][2] == "–"


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_a_folder_that_is_no_run_is_refused_in_one_line(tmp_path: Path, capsys, kind: str) -> None:
    target = tmp_path / "nothing"
    if kind == "empty":
        (target / "_shared").mkdir(parents=True)
    elif kind == "file":
        target.write_text("not a folder")
    code, out, err = report([target], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and str(target) in err


def test_a_browser_renders_the_page(page: tuple[Path, str], tmp_path: Path) -> None:
    """Headless Chromium draws the page offline (skipped where no Chromium is installed)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", page[0].as_uri()],
                   capture_output=True, timeout=60, check=True)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels[..., :3].std() > 0.05  # tables and figures drawn, not a blank page
