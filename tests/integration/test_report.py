"""``sandbox audit report``: a self-contained HTML compliance report, rendered in Chromium.

A real server runs released, refused (policy, quota, budget) and DP jobs; the report is then
generated through the CLI from the state store, checked for network references, identifiers,
charts and the absence of released values, and screenshotted in headless Chromium, which
must show the charts. Chromium is part of the project's set-up (.ci/run, README): without it
the test fails, it is never skipped.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sandbox import BudgetExhausted, PolicyDenied, Query, QuotaExceeded, QuotaLimits
from sandbox.audit import AuditLog
from sandbox.cli import main
from sandbox.report import Period, build_report, parse_period
from tests.conftest import PUMS_DIR, World, pums_policy

WorldFactory = Callable[..., World]
CHROMIUM = "/usr/bin/chromium"
ACCEPTED, RELEASED, REFUSED = (0x1F, 0x77, 0xB4), (0x2C, 0xA0, 0x2C), (0xD6, 0x27, 0x28)


def run(*args: str) -> Result:
    env = {k: None for k in os.environ if k.startswith("SANDBOX_")}
    return CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)


def dp_policy(name: str) -> str:
    """The PUMS test policy in DP mode: ε 1 a job, 2 a project, 10 the population."""
    text = pums_policy(name, "pums.csv", k=1, age_bins=True)
    terms = (
        "noise: {mechanism: discrete_laplace, epsilon_per_job: 1}, "
        "budget: {epsilon_per_project: 2, epsilon_per_population: 10, window_days: 30}"
    )
    return text.replace("rounding_base: 1}", f"rounding_base: 1, {terms}}}")


@pytest.fixture
def busy_world(world_factory: WorldFactory) -> tuple[World, list[float]]:
    """pums_world plus a DP copy of PUMS and a small-quota project, after a day of jobs.

    Returns the world and every value released to the researcher.
    """
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv"), "pumsdp": dp_policy("pumsdp")},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
    )
    world.register("pums")
    world.register("pumsdp")
    world.project(
        "census-study", (("pums", "research"), ("pums", "demography"), ("pumsdp", "research"))
    )
    world.project("tiny-quota", (("pums", "research"),), quota=QuotaLimits(jobs_total=2))
    ana = world.client("ana")
    released: list[float] = []

    def ok(query: Query, project: str, purpose: str) -> None:
        result = ana.run(query, project=project, purpose=purpose, timeout=60)
        released.extend(
            float(c.value) for r in result.table.rows for c in r.cells if c.value is not None
        )

    ok(Query("pums").group_by("sex").count(), "census-study", "research")
    ok(Query("pums").group_by("educ").mean("income"), "census-study", "research")
    ok(Query("pums").group_by("race").count(), "census-study", "research")
    ok(Query("pums").group_by("sex").count(), "census-study", "demography")
    with pytest.raises(PolicyDenied):  # the deny rule: no income sums for demography
        ana.run(Query("pums").sum("income"), project="census-study", purpose="demography")
    with pytest.raises(PolicyDenied):  # a purpose the project does not hold
        ana.run(Query("pums").count(), project="census-study", purpose="marketing")
    ok(Query("pums").group_by("sex").count(), "tiny-quota", "research")
    ok(Query("pums").group_by("married").count(), "tiny-quota", "research")
    with pytest.raises(QuotaExceeded):
        ana.run(Query("pums").group_by("race").count(), project="tiny-quota", purpose="research")
    ok(Query("pumsdp").group_by("sex").count(), "census-study", "research")
    ok(Query("pumsdp").group_by("married").count(), "census-study", "research")
    with pytest.raises(BudgetExhausted):
        ana.run(Query("pumsdp").group_by("age").count(), project="census-study", purpose="research")
    with world.db.write() as conn:  # review events, as the review feature logs them
        AuditLog(world.db).append(conn, "review.approved", actor="sam", job_id="j-test")
    return world, released


def test_report_is_self_contained_complete_value_free_and_renders(
    busy_world: tuple[World, list[float]], tmp_path: Path
) -> None:
    world, released = busy_world
    out = tmp_path / "report.html"
    config = str(world.root / "sandbox.toml")
    result = run("audit", "report", "--config", config, "--period", "last-7d", "--out", str(out))
    assert result.exit_code == 0, result.output
    html = out.read_text()
    size, root = _log_head(world, html)
    assert result.output.startswith(f"wrote {out}:")
    assert f"log of {size} entries, root {root}" in result.output

    # Self-contained: nothing that could load from anywhere.
    lowered = html.lower()
    for marker in ("http://", "https://", "src=", "href=", "<script", "url(", "@import", "//"):
        assert marker not in lowered, marker
    assert "default-src 'none'" in html

    # Header: the period, the log covered and the generation time.
    today = dt.datetime.now(dt.UTC).date()
    assert f"{(today - dt.timedelta(days=6)).isoformat()} to {today.isoformat()}" in html
    assert AuditLog(world.db).verify().ok
    assert "Generated" in html and today.isoformat() in html

    # Identifiers, refusal reasons and rules.
    for text in (
        "census-study", "tiny-quota", "research", "demography", "marketing", "pumsdp",
        "POLICY_DENIED", "QUOTA_EXCEEDED", "BUDGET_EXHAUSTED", "quota.jobs_total",
        "budget.epsilon_per_project", "pums-persons", "review.approved",
    ):  # fmt: skip
        assert text in html, text

    # One SVG per chart, and every chart there.
    charts = re.findall(r'<svg class="chart" data-chart="([^"]+)"', html)
    assert html.count("<svg") == len(charts)
    expected = {
        "activity-all",
        "activity-project-census-study",
        "activity-project-tiny-quota",
        "activity-purpose-research",
        "activity-purpose-demography",
        "activity-purpose-marketing",
        "activity-dataset-pums",
        "activity-dataset-pumsdp",
        "quota-jobs-census-study",
        "quota-rows-census-study",
        "quota-jobs-tiny-quota",
        "quota-rows-tiny-quota",
        "epsilon-pums-persons-census-study",
        "epsilon-population-pums-persons",
        "refusal-reasons",
        "review-activity",
    }
    assert expected <= set(charts), expected - set(charts)
    assert len(charts) == len(set(charts))

    # No released value: none of the job results' numbers stands anywhere in the page. Small
    # integers (counts of jobs, days, axis ticks) and round ones (rows charged: 1,000 a job,
    # tick steps) may coincide with legitimate figures, so only the others are checked.
    checked = [v for v in released if not (v.is_integer() and (v < 100 or v % 50 == 0))]
    assert len(checked) >= 10
    for value in checked:
        for token in _number_forms(value):
            pattern = rf"(?<![\w.,]){re.escape(token)}(?![\w]|[.,]\d)"
            assert not re.search(pattern, html), f"released value {token} is in the report"

    _assert_renders(out, tmp_path)


def _log_head(world: World, html: str) -> tuple[int, str]:
    """The log size and root hash the report names; the root is the log's at that size
    (entries appended since, e.g. checkpoints, do not change it)."""
    found = re.search(r"<th>Log size</th><td>([\d,]+) entries</td>", html)
    assert found is not None
    size = int(found.group(1).replace(",", ""))
    row = world.db.conn.execute("SELECT root FROM audit WHERE seq = ?", (size - 1,)).fetchone()
    assert row is not None and f"<code>{row[0]}</code>" in html
    assert "ok: every leaf hash and tree head recomputed" in html
    return size, str(row[0])


def _number_forms(value: float) -> set[str]:
    if value.is_integer():
        return {str(int(value)), f"{int(value):,}"}
    return {repr(value), f"{value:.4g}", f"{value:.2f}", f"{value:,.2f}", f"{value:.1f}"}


def _assert_renders(page: Path, tmp_path: Path) -> None:
    """Headless Chromium screenshots the page; the image must show the charts' colours."""
    chromium = shutil.which("chromium") or CHROMIUM
    if not Path(chromium).exists():
        pytest.fail(
            "Chromium is not installed, so the report cannot be rendered: install Debian's "
            "'chromium' package (the project's set-up does: .ci/run, README 'Set up')"
        )
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr.decode(errors="replace")[-2000:]
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (1200, 2000)
    counts: dict[tuple[int, int, int], int] = {}
    for p in pixels:
        counts[p] = counts.get(p, 0) + 1
    total = width * height
    white = counts.get((255, 255, 255), 0)
    assert total - white > total * 0.03, "the screenshot is (nearly) blank"
    assert len(counts) > 50, f"only {len(counts)} distinct colours: no charts drawn"
    for name, colour in (("accepted", ACCEPTED), ("released", RELEASED), ("refused", REFUSED)):
        near = sum(n for c, n in counts.items() if max(abs(a - b) for a, b in zip(c, colour)) <= 4)
        assert near >= 100, f"no {name} bars in the screenshot ({near} pixels)"


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """An 8-bit RGB or RGBA, non-interlaced PNG (as Chromium writes) as RGB pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    prev = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, line, prev, bpp)
        pixels.extend(zip(line[0::bpp], line[1::bpp], line[2::bpp], strict=True))
        prev = line
    return width, height, pixels


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    if kind == 0:
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = prev[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            corner = prev[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + pred) & 0xFF
        else:
            raise AssertionError(f"bad PNG filter {kind}")


def test_a_period_without_the_jobs_shows_none_of_them(
    busy_world: tuple[World, list[float]], tmp_path: Path
) -> None:
    world, _ = busy_world
    out = tmp_path / "old.html"
    config = str(world.root / "sandbox.toml")
    result = run("audit", "report", "--config", config, "--period", "2020-01", "--out", str(out))
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "2020-01-01 to 2020-01-31" in html
    for absent in ("census-study", "tiny-quota", "POLICY_DENIED", "QUOTA_EXCEEDED", "pums-persons"):
        assert absent not in html, absent
    assert "No job was refused in this period." in html
    assert "No review activity in this period." in html
    assert "No project existed by the end of this period." in html
    # The header still names the whole log it was generated from.
    _log_head(world, html)


def _entry(time: str, event: str, **fields: object) -> dict[str, object]:
    return {"time": time, "event": event, **fields}


def test_build_report_counts_only_the_period_and_starts_burn_down_before_it() -> None:
    base = {"dataset": "health", "purpose": "care"}
    entries = [
        _entry("2026-01-01T09:00:00+00:00", "project.created", project="p1",
               quota={"jobs_total": 10, "rows_total": None, "jobs_per_day": None,
                      "rows_per_day": None}),
        # Before the period: counts towards quota used, not towards the period's activity.
        _entry("2026-02-27T23:59:59.999999+00:00", "job.released", project="p1",
               charged={"jobs": 1, "rows": 500}, **base),
        _entry("2026-02-28T10:00:00+00:00", "job.denied", project="p1", reason="OLD_REASON",
               rule_ids=["old.rule"], **base),
        # In the period (March).
        _entry("2026-03-01T00:00:00+00:00", "job.accepted", project="p1", **base),
        _entry("2026-03-01T00:00:01+00:00", "job.released", project="p1",
               charged={"jobs": 1, "rows": 500}, **base),
        _entry("2026-03-31T23:59:59+00:00", "job.denied", project="p1", reason="QUOTA_EXCEEDED",
               rule_ids=["quota.jobs_total"], **base),
        _entry("2026-03-15T12:00:00+00:00", "review.requested", job_id="j1"),
        # After it: ignored entirely.
        _entry("2026-04-01T00:00:00+00:00", "job.denied", project="p2", reason="LATE_REASON",
               rule_ids=["late.rule"], dataset="late-data", purpose="late-purpose"),
    ]  # fmt: skip
    html = build_report(
        entries,
        period_start=dt.date(2026, 3, 1),
        period_end=dt.date(2026, 3, 31),
        generated_at=dt.datetime(2026, 4, 2, tzinfo=dt.UTC),
    )
    assert "2026-03-01 to 2026-03-31" in html
    for absent in ("OLD_REASON", "old.rule", "LATE_REASON", "late.rule", "late-data", "p2"):
        assert absent not in html, absent
    assert "QUOTA_EXCEEDED (quota.jobs_total)" in html
    assert 'data-chart="review-activity"' in html and "review.requested" in html
    # p1: 1 job before March, 1 in it: 2 used of 10, 8 left.
    row = re.search(r"<tr><td>p1</td>(.*?)</tr>", html)
    assert row is not None
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))
    assert cells[:4] == ["1", "2", "10", "8"], cells
    assert cells[6:8] == ["500", "1,000"], cells
    assert "No differentially private job" in html


def test_build_report_escapes_every_string() -> None:
    evil = '<img src=x onerror="alert(1)">'
    html = build_report(
        [
            _entry(
                "2026-03-02T10:00:00+00:00",
                "job.denied",
                project=evil,
                dataset=evil,
                purpose=evil,
                reason=evil,
                rule_ids=[evil],
            ),
            _entry("2026-03-02T10:00:00+00:00", f"review.{evil}"),
        ],
        period_start=dt.date(2026, 3, 1),
        period_end=dt.date(2026, 3, 3),
    )
    assert "<img" not in html and 'onerror="' not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_period_forms() -> None:
    today = dt.date(2026, 12, 3)
    assert parse_period("2026-02", today) == Period(dt.date(2026, 2, 1), dt.date(2026, 2, 28))
    assert parse_period("2026", today) == Period(dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    assert parse_period("2026-11-05", today) == Period(dt.date(2026, 11, 5), dt.date(2026, 11, 5))
    assert parse_period("2026-11-05..2026-11-20", today) == Period(
        dt.date(2026, 11, 5), dt.date(2026, 11, 20)
    )
    assert parse_period("last-30d", today) == Period(dt.date(2026, 11, 4), today)
    for bad in ("2026-13", "2026-11-20..2026-11-05", "last-0d", "yesterday", "2026-02-30", ""):
        with pytest.raises(ValueError):
            parse_period(bad, today)


def test_cli_usage_errors_and_no_overwrite(pums_world: World, tmp_path: Path) -> None:
    config = str(pums_world.root / "sandbox.toml")
    out = tmp_path / "r.html"
    bad = run("audit", "report", "--config", config, "--period", "soon", "--out", str(out))
    assert bad.exit_code == 2 and "--period" in bad.output and not out.exists()
    missing_dir = tmp_path / "nowhere" / "r.html"
    assert run("audit", "report", "--config", config, "--out", str(missing_dir)).exit_code == 2
    assert run("audit", "report", "--config", config).exit_code == 2  # --out is required

    out.write_text("keep me")
    again = run("audit", "report", "--config", config, "--out", str(out))
    assert again.exit_code == 1 and "not overwritten" in again.output
    assert out.read_text() == "keep me"
    forced = run("audit", "report", "--config", config, "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
