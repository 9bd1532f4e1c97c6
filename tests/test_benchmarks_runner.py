"""The benchmark runner's machinery (``python -m benchmarks``) on fake benchmark modules: no
database, nothing timed. Discovery and skipping, goals met and missed, the exit status, the
table, and how BENCHMARKS.md is rewritten (the generated block only; hand-written sections
kept; ``--only`` keeps the other modules' results)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import __main__ as runner
from benchmarks._compare import Comparison, Goal, Report

MACHINE = "2 cores, Test CPU, PostgreSQL 15.0, Python 3.11.7"


def comparison(question: str, ours: float, baseline: float, goal: Goal) -> Comparison:
    return Comparison(question, ours, baseline, "µs/call", goal, "a raw client", "a note")


def report(title: str, *comparisons: Comparison) -> Report:
    return Report(
        title=title,
        command=f"python -m benchmarks.{title.lower().replace(' ', '_')}",
        data=f"The data of {title}.",
        comparisons=list(comparisons),
        details=f"Details of {title}.",
    )


def fake_module(name: str, make: Callable[[bool], Report] | None) -> ModuleType:
    module = ModuleType(f"benchmarks.{name}")
    if make is not None:
        module.comparisons = make  # type: ignore[attr-defined]
    return module


class Fakes:
    """A fake module list for the runner: ``importer`` hands out these modules and records
    the quick flag each ``comparisons`` got."""

    def __init__(self, modules: dict[str, Callable[[bool], Report] | None]) -> None:
        self.quick_flags: list[bool] = []
        self.modules = {}
        for name, make in modules.items():
            self.modules[f"benchmarks.{name}"] = fake_module(
                name, None if make is None else self._recording(make)
            )

    def _recording(self, make: Callable[[bool], Report]) -> Callable[[bool], Report]:
        def comparisons(quick: bool) -> Report:
            self.quick_flags.append(quick)
            return make(quick)

        return comparisons

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.removeprefix("benchmarks.") for n in self.modules)

    def importer(self, name: str) -> ModuleType:
        return self.modules[name]

    def main(self, argv: list[str], path: Path) -> int:
        return runner.main(
            argv, names=self.names, importer=self.importer, path=path, machine=lambda: MACHINE
        )


def speed(quick: bool) -> Report:
    return report(
        "Speed",
        comparison("get: SDK / raw", 120.0, 100.0, Goal("max", 1.3)),  # 1.20x, met
        comparison("list: SDK / raw", 150.0, 100.0, Goal("max", 1.3)),  # 1.50x, missed
    )


def throughput(quick: bool) -> Report:
    return report("Throughput", comparison("ingest / COPY", 40.0, 100.0, Goal("min", 0.5)))


def broken(quick: bool) -> Report:
    raise RuntimeError("the server did not start")


# -- goals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("goal", "ours", "baseline", "met"),
    [
        (Goal("max", 1.3), 130.0, 100.0, True),  # the limit itself is met
        (Goal("max", 1.3), 131.0, 100.0, False),
        (Goal("max", 1.25), 50.0, 100.0, True),
        (Goal("min", 0.5), 50.0, 100.0, True),
        (Goal("min", 0.5), 49.0, 100.0, False),
        (Goal("min", 0.4), 140.0, 100.0, True),
        (Goal("max", 2.0), 1.0, 0.0, False),  # no baseline: an infinite ratio misses
    ],
)
def test_goals_are_marked_met_or_missed(
    goal: Goal, ours: float, baseline: float, met: bool
) -> None:
    c = comparison("q", ours, baseline, goal)
    assert c.met is met
    row = runner.summary_row("mod", c)
    assert row.endswith("| yes |" if met else "| **no** |")
    assert f"| {goal} |" in row


@pytest.mark.parametrize(
    ("value", "text"),
    [(12345.6, "12,346"), (100.0, "100"), (42.25, "42.2"), (1.234, "1.23"), (0.0123, "0.012")],
)
def test_numbers_keep_their_meaningful_digits(value: float, text: str) -> None:
    assert runner.number(value) == text


# -- running ------------------------------------------------------------------------------


def test_quick_run_prints_every_ratio_skips_modules_without_comparisons_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes = Fakes({"speed": speed, "plain": None, "throughput": throughput})
    path = tmp_path / "BENCHMARKS.md"
    assert fakes.main(["--quick"], path) == 0  # a missed goal is no failure
    out = capsys.readouterr().out
    assert "note: benchmarks.plain defines no comparisons(quick): skipped" in out
    assert fakes.quick_flags == [True, True]
    assert "| `speed` | get: SDK / raw | 120 µs/call | 100 µs/call | 1.20x | <= 1.3 | yes |" in out
    assert "| 1.50x | <= 1.3 | **no** |" in out
    assert "| 0.40x | >= 0.5 | **no** |" in out
    assert "1 of 3 goals met" in out
    assert not path.exists()


def test_a_module_that_raises_fails_the_run_after_the_others_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes = Fakes({"broken": broken, "speed": speed})
    assert fakes.main(["--quick"], tmp_path / "BENCHMARKS.md") == 1
    captured = capsys.readouterr()
    assert "benchmarks.broken FAILED: RuntimeError: the server did not start" in captured.out
    assert "RuntimeError: the server did not start" in captured.err  # the traceback
    assert "| `speed` | get: SDK / raw |" in captured.out


def test_only_runs_the_named_modules_and_refuses_unknown_names(tmp_path: Path) -> None:
    fakes = Fakes({"speed": speed, "throughput": throughput})
    assert fakes.main(["--quick", "--only", "throughput"], tmp_path / "B.md") == 0
    assert fakes.quick_flags == [True]
    with pytest.raises(SystemExit) as exited:
        fakes.main(["--only", "nope"], tmp_path / "B.md")
    assert exited.value.code == 2


def test_a_full_run_writes_the_summary_and_each_section(tmp_path: Path) -> None:
    fakes = Fakes({"speed": speed, "throughput": throughput})
    path = tmp_path / "BENCHMARKS.md"
    assert fakes.main([], path) == 0
    assert fakes.quick_flags == [False, False]
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert text.count(runner.START) == text.count(runner.END) == 1
    assert f"machine: {MACHINE}" in text
    assert "Generated by `python -m benchmarks` on " in text
    summary = text[: text.index("<!-- benchmark:speed -->")]
    assert [line.split(" | ")[1] for line in summary.splitlines() if line.startswith("| `")] == [
        "get: SDK / raw",
        "list: SDK / raw",
        "ingest / COPY",
    ]
    for title in ("Speed", "Throughput"):
        assert f"## {title}\n" in text
        assert f"Command: `python -m benchmarks.{title.lower()}`" in text
        assert f"The data of {title}." in text
        assert f"Details of {title}." in text
    assert "| 100 µs/call (a raw client) |" in text


def test_quick_with_write_writes(tmp_path: Path) -> None:
    fakes = Fakes({"speed": speed})
    path = tmp_path / "BENCHMARKS.md"
    assert fakes.main(["--quick", "--write"], path) == 0
    assert "Generated by `python -m benchmarks --quick --write`" in path.read_text()


HAND_WRITTEN = """# Benchmarks

Each section names the command that reproduces it.

## Speed

The old hand-written numbers of Speed, replaced by the generated section.

## Measuring a recording (`benchmarks/audio_measure.py`)

Hand-written: 104x realtime.

## Erasing a user

Hand-written too.
"""


def test_writing_keeps_hand_written_sections_and_replaces_the_ones_generated(
    tmp_path: Path,
) -> None:
    fakes = Fakes({"speed": speed})
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(HAND_WRITTEN)
    fakes.main([], path)
    first = path.read_text()
    assert "The old hand-written numbers of Speed" not in first
    assert first.count("## Speed\n") == 1
    for kept in (
        "## Measuring a recording (`benchmarks/audio_measure.py`)\n\nHand-written: 104x"
        " realtime.\n",
        "## Erasing a user\n\nHand-written too.\n",
        "Each section names the command that reproduces it.\n",
    ):
        assert kept in first
    # the block sits where the first section was: after the introduction
    assert first.index("reproduces it.") < first.index(runner.START)
    assert first.index(runner.END) < first.index("## Measuring a recording")
    fakes.main([], path)  # again: the block is replaced, not added
    second = path.read_text()
    assert second.count(runner.START) == 1
    assert _without_dates(second) == _without_dates(first)


def test_only_with_write_keeps_the_other_modules_results(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    Fakes({"speed": speed, "throughput": throughput}).main([], path)
    before = path.read_text()

    def faster(quick: bool) -> Report:
        return report("Speed", comparison("get: SDK / raw", 105.0, 100.0, Goal("max", 1.3)))

    Fakes({"speed": faster, "throughput": throughput}).main(["--only", "speed"], path)
    after = path.read_text()
    assert "| 1.05x |" in after
    assert "list: SDK / raw" not in after  # speed's rows are the new run's
    throughput_section = before[before.index("<!-- benchmark:throughput -->") :]
    throughput_section = throughput_section[: throughput_section.index(runner.END)]
    assert throughput_section in after  # as it was, with its own date
    assert after.count("| `throughput` | ingest / COPY |") == 1
    assert after.index("<!-- benchmark:speed -->") < after.index("<!-- benchmark:throughput -->")


def test_a_start_marker_without_its_end_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\n{runner.START}\n\n## Hand\n")
    with pytest.raises(ValueError, match="no '<!-- comparisons:end -->'"):
        Fakes({"speed": speed}).main([], path)
    assert path.read_text() == f"# Benchmarks\n\n{runner.START}\n\n## Hand\n"


_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="#<>\r"), min_size=1, max_size=40
).map(lambda s: " ".join(s.split()) or "x")


@settings(max_examples=50, deadline=None)
@given(
    sections=st.lists(st.tuples(_TEXT, _TEXT), max_size=5, unique_by=lambda t: t[0]),
    intro=_TEXT,
)
def test_any_hand_written_section_survives_a_write(
    sections: list[tuple[str, str]], intro: str
) -> None:
    hand = "".join(f"## {title}\n\n{body}\n\n" for title, body in sections if title != "Speed")
    text = f"# Benchmarks\n\n{intro}\n\n{hand}"
    block = runner.generated_block(
        [runner.Outcome("speed", speed(False))], command="c", when="w", machine=MACHINE
    )
    written = runner.update_markdown(text, block, ["Speed"])
    for title, body in sections:
        if title != "Speed":
            assert f"## {title}\n\n{body}\n" in written
    assert f"{intro}\n" in written
    assert written.count(runner.START) == 1
    assert runner.update_markdown(written, block, ["Speed"]) == written


def _without_dates(text: str) -> str:
    return re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "<date>", text)
