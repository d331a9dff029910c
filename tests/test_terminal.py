"""What a user sees in a real terminal: ``xio upload-dicom`` in tmux at 120x35, both transports.

Each test runs the real CLI in a tmux pane against a sandbox on loopback and reads the screen as
the terminal drew it (``tmux capture-pane``): the rows of the progress display, their columns
(which must not move when later rows appear), the final summary, and Ctrl-C in the middle of a
send. Moments are found by what the screen shows (a row appears, a count moves), never by
sleeping; the only time limit is a guard against a hung test.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xnatio.sandbox import Sandbox
from xnatio.synth import write_session

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux; .ci/run installs it)"
)

WIDTH, HEIGHT = 120, 35
FILES = 40
GUARD = 180.0  # seconds: only against a test that would otherwise hang
BAR_CHARS = "━╸╺"
ROW = re.compile(r"^(scanning|sending|acknowledged|stored|committing|waiting|verifying)\s")


class Pane:
    """One tmux server (its own socket) with one 120x35 pane running a script."""

    def __init__(self, script: Path) -> None:
        self.socket = f"xio-test-{uuid.uuid4().hex[:12]}"
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(WIDTH),
                  "-y", str(HEIGHT), f"bash {shlex.quote(str(script))}; sleep 3600")  # fmt: skip

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return proc.stdout

    def screen(self) -> list[str]:
        """The visible screen and its scrollback, wrapped lines joined."""
        text = self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t")
        return [line.rstrip() for line in text.splitlines()]

    def wait_for(self, what: str, ready: Callable[[list[str]], bool]) -> list[str]:
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            screen = self.screen()
            if ready(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"never saw {what}; the screen:\n" + "\n".join(self.screen()))

    def finished(self) -> tuple[int, list[str]]:
        """Wait for the command to end: its exit code and the screen."""
        screen = self.wait_for("the end of the command", lambda s: any("@@exit=" in ln for ln in s))
        (code,) = [int(ln.split("@@exit=")[1]) for ln in screen if "@@exit=" in ln]
        return code, screen[: next(i for i, ln in enumerate(screen) if "@@exit=" in ln)]

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def pane_for(tmp_path: Path) -> Iterator[Callable[[Sandbox, list[str]], Pane]]:
    """Start ``xio ARGS`` in a fresh pane, against a sandbox; every pane is closed after."""
    panes: list[Pane] = []

    def start(sb: Sandbox, args: list[str]) -> Pane:
        script = tmp_path / f"run{len(panes)}.sh"
        env = {
            "XNAT_SERVER": sb.url,
            "XNAT_USERNAME": "admin",
            "XNAT_PASSWORD": "admin",
            "XNAT_DICOM_HOST": "127.0.0.1",
            "XNAT_DICOM_PORT": str(sb.dicom_port or ""),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "HOME": str(tmp_path),
            "TERM": "xterm-256color",
        }
        exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
        command = shlex.join([sys.executable, "-m", "xnatio", *args])
        # The terminal's own size, as a user's shell has it (not the test runner's COLUMNS).
        lines = ["unset COLUMNS LINES", exports, f"cd {shlex.quote(str(tmp_path))}", command]
        script.write_text("\n".join([*lines, 'echo "@@exit=$?"', ""]))
        pane = Pane(script)
        panes.append(pane)
        return pane

    yield start
    for pane in panes:
        pane.close()


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("term") / "session"
    write_session(out, series=2, instances=FILES // 2, rows=64, columns=64, seed=16)
    return out


def rows(screen: list[str]) -> dict[str, str]:
    """The progress rows on the screen, by label (the last drawing of each)."""
    return {m.group(1): line for line in screen if (m := ROW.match(line))}


def layout(line: str) -> tuple[int, int, int]:
    """Where a row's bar starts and ends, and where its clock (time column) starts."""
    bar = min(line.index(c) for c in BAR_CHARS if c in line)
    end = bar
    while end < len(line) and line[end] in BAR_CHARS:
        end += 1
    clock = re.search(r"\b\d+:\d\d:\d\d\b", line)
    assert clock is not None, line
    return bar, end, clock.start()


def amount(row: str) -> str:
    """The amount column of a row: ``12/20 batches``, ``40.9/40.9 kB``."""
    _, end, _ = layout(row)
    return " ".join(row[end:].split()[:2])


def assert_columns_stay(*screens: list[str]) -> None:
    """Every row of every screen has its bar and its amount in the same columns."""
    places = {layout(line) for screen in screens for line in rows(screen).values()}
    assert len(places) == 1, f"columns moved: {places}\n" + "\n".join(screens[-1])


def no_errors(screen: list[str]) -> None:
    """No traceback, no ``error:`` lines, and each row drawn once (a redraw that went wrong
    leaves a row twice)."""
    text = "\n".join(screen)
    labels = [m.group(1) for line in screen if (m := ROW.match(line))]
    assert len(labels) == len(set(labels)), text
    assert "Traceback" not in text and "internal error" not in text, text
    assert not [ln for ln in screen if ln.startswith("error:")], text


def test_rest_bar_phases_and_summary(
    make_sandbox: Callable[..., Sandbox], session: Path, pane_for: Callable[..., Pane]
) -> None:
    sb = make_sandbox()
    sb.faults.file_delay = 0.03  # slow enough to see the send under way
    pane = pane_for(sb, ["upload-dicom", "P1", "S1", "E1", str(session), "--num-batches", "8",
                         "--upload-workers", "2"])  # fmt: skip
    during = pane.wait_for(
        "the send under way",
        lambda s: "acknowledged" in rows(s) and "committing" not in rows(s),
    )
    code, screen = pane.finished()
    assert code == 0, "\n".join(screen)
    no_errors(screen)
    shown = rows(screen)
    assert list(shown) == ["scanning", "sending", "acknowledged", "committing", "verifying"]
    assert amount(shown["scanning"]) == f"{FILES}/{FILES} files"
    assert amount(shown["acknowledged"]) == "8/8 batches"
    assert amount(shown["committing"]) == "1/1 sessions"
    assert amount(shown["verifying"]) == f"{FILES}/{FILES} instances"
    pair, unit = amount(shown["sending"]).split()
    done, total = pair.split("/")
    assert done == total
    assert_columns_stay(during, screen)
    (summary,) = [ln for ln in screen if ln.startswith("OK: ")]
    m = re.fullmatch(
        rf"OK: {FILES} of {FILES} files sent \((\S+ \S+)\) in \S+ s, (\S+ \S+/s); 8 batches ok, "
        r"0 failed, 0 retries",
        summary,
    )
    assert m, summary
    # One total and one rate: the bar ends on the summary's numbers.
    assert m.group(1) == f"{total} {unit}", (m.group(1), shown["sending"])
    assert f" {m.group(2)} " in shown["sending"], (m.group(2), shown["sending"])
    assert f"verified: {FILES} of {FILES} instances present exactly once" in screen
    assert any(re.fullmatch(r"\S+ s in all \(\S+ s sending\)", ln) for ln in screen), screen


def test_cstore_bar_waits_in_words_and_summary_gives_both_times(
    make_sandbox: Callable[..., Sandbox], session: Path, pane_for: Callable[..., Pane]
) -> None:
    sb = make_sandbox(dicom_port=0, idle_interval=3.0)  # receiving for 3 s after the send
    sb.store.set_prearchive_code("P1", 4)  # auto-archive, as the README's tour sets it
    pane = pane_for(sb, ["upload-dicom", "P1", "S2", "E2", str(session), "--transport",
                         "dicom-store", "--num-batches", "2"])  # fmt: skip
    waiting = pane.wait_for("the wait for XNAT", lambda s: "waiting" in rows(s))
    code, screen = pane.finished()
    assert code == 0, "\n".join(screen)
    no_errors(screen)
    shown = rows(screen)
    assert list(shown) == ["scanning", "sending", "stored", "waiting", "verifying"]
    assert amount(shown["stored"]) == f"{FILES}/{FILES} instances"
    assert amount(shown["verifying"]) == f"{FILES}/{FILES} instances"
    # What XNAT is doing, in words, and the time waited so far: no countdown to --wait.
    first = rows(waiting)["waiting"]
    assert "XNAT receiving" in first and "-:--:--" not in first, first
    clocks = [re.findall(r"\b\d:\d\d:\d\d\b", r["waiting"])[-1] for r in (rows(waiting), shown)]
    assert clocks == sorted(clocks), clocks
    assert_columns_stay(waiting, screen)
    (summary,) = [ln for ln in screen if ln.startswith("OK: ")]
    m = re.fullmatch(
        rf"OK: {FILES} of {FILES} instances stored \(0 with warnings, 0 failed\) in (\S+) s, "
        r"(\S+ \S+/s)",
        summary,
    )
    assert m, summary
    assert f" {m.group(2)} " in shown["sending"], (m.group(2), shown["sending"])
    (times,) = [ln for ln in screen if " in all " in ln]
    t = re.fullmatch(
        r"(\S+) s in all \((\S+) s sending, (\S+) s waiting for XNAT to build and archive the "
        r"session\)",
        times,
    )
    assert t, times
    total, sending, waited = (float(x) for x in t.groups())
    assert float(m.group(1)) == sending and total >= sending + waited, times


def _stop_mid_send(pane: Pane, label: str, files: int) -> tuple[int, list[str], str]:
    """Press Ctrl-C once the bar shows some of ``label`` done (and not all): the exit code, the
    screen and the one line xio printed."""

    def under_way(screen: list[str]) -> bool:
        row = rows(screen).get(label)
        if row is None:
            return False
        done, total = amount(row).split()[0].split("/")
        return 0 < int(done) < int(total)

    pane.wait_for(f"some {label} and not all", under_way)
    pane.tmux("send-keys", "-t", "t", "C-c")
    code, screen = pane.finished()
    no_errors(screen)
    said = [ln for ln in screen if ln.startswith("xio:")]
    assert len(said) == 1, "\n".join(screen)
    return code, screen, said[0]


def test_rest_ctrl_c_one_line_agreeing_with_the_bar(
    make_sandbox: Callable[..., Sandbox], session: Path, pane_for: Callable[..., Pane]
) -> None:
    sb = make_sandbox()
    sb.faults.file_delay = 0.1
    pane = pane_for(sb, ["upload-dicom", "P1", "S3", "E3", str(session), "--num-batches", "20",
                         "--upload-workers", "2"])  # fmt: skip
    code, screen, line = _stop_mid_send(pane, "acknowledged", 20)
    assert code == 130, "\n".join(screen)
    m = re.fullmatch(
        rf"xio: interrupted: (\d+) of {FILES} instances were sent in (\d+) of 20 batches "
        r"acknowledged by XNAT; nothing was committed\. Run the same command again with "
        r"--resume to send the rest",
        line,
    )
    assert m, line
    assert amount(rows(screen)["acknowledged"]) == f"{m.group(2)}/20 batches", "\n".join(screen)
    assert int(m.group(1)) == 2 * int(m.group(2))  # 2 files per batch
    assert "committing" not in rows(screen)


def test_cstore_ctrl_c_one_line_agreeing_with_the_bar(
    make_sandbox: Callable[..., Sandbox], session: Path, pane_for: Callable[..., Pane]
) -> None:
    sb = make_sandbox(dicom_port=0)
    sb.faults.file_delay = 0.1
    pane = pane_for(sb, ["upload-dicom", "P1", "S4", "E4", str(session), "--transport",
                         "dicom-store", "--num-batches", "2"])  # fmt: skip
    code, screen, line = _stop_mid_send(pane, "stored", FILES)
    assert code == 130, "\n".join(screen)
    m = re.fullmatch(
        rf"xio: interrupted: (\d+) of {FILES} instances stored(?:, (\d+) on their way, not "
        r"confirmed)?, (\d+) not sent; run the same command with --resume to send the rest",
        line,
    )
    assert m, line  # nothing "failed", nothing blamed on the receiver
    stored, on_the_way, not_sent = int(m.group(1)), int(m.group(2) or 0), int(m.group(3))
    assert stored + on_the_way + not_sent == FILES and not_sent > 0, line
    row = rows(screen)["stored"]
    assert amount(row) == f"{stored}/{FILES} instances" and "failed" not in row, row
    assert "waiting" not in rows(screen) and "verifying" not in rows(screen)
