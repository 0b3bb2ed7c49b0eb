"""`--compile auto` in a chat: the decode step is compiled in a separate process at idle priority, and the chat
switches to it between replies once it is stored (issue 6).

Slow: one real AOTInductor build of a tiny model (tens of seconds on two cores).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatcli.backends.local import LocalBackend
from chatcli.engine import background
from chatcli.engine import compile as compiling
from chatcli.repl.boot import stderr_notice
from chatcli.types import Message, SamplingParams

pytestmark = pytest.mark.slow

PARAMS = SamplingParams(temperature=0.0, max_tokens=10)


def compiled_dir():
    from chatcli import settings

    return settings.cache_dir() / "compiled"


def two_turns(backend: LocalBackend) -> list[str]:
    """Two replies; the notices on their chunks go to stderr, as `chatcli ask` shows them."""
    msgs = [Message("user", "Hello there")]

    def reply(messages) -> str:
        chunks = list(backend.stream_chat(messages, PARAMS))
        for notice in (n for c in chunks for n in c.notices):
            stderr_notice(notice)
        return "".join(c.text for c in chunks)

    first = reply(msgs)
    second = reply(msgs + [Message("assistant", first), Message("user", "More")])
    return [first, second]


def wait_until_built(package, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while background.running(package):
        assert time.monotonic() < deadline, "the background build did not finish"
        time.sleep(0.5)


def test_a_chat_switches_to_the_step_built_in_the_background(tiny_model_factory):
    folder = tiny_model_factory("llama")
    eager = LocalBackend(dtype="float32", compile="off")
    eager.load(str(folder))
    want = two_turns(eager)

    backend = LocalBackend(dtype="float32", compile="auto")
    backend.load(str(folder))
    assert backend.compiled == "eager"  # nothing stored yet
    package = compiling.package_path(backend.model, folder, compiled_dir())
    package.parent.mkdir(parents=True)
    package.with_suffix(".lock").write_text("999999999")  # a builder killed mid-way: its lock must not block this one

    import torch

    threads = torch.get_num_threads()
    heard = []
    backend.on_notice = heard.append
    assert backend.compile_in_background() is True
    assert [n.kind for n in heard] == ["info"] and "background" in heard[0].text
    assert torch.get_num_threads() == max(1, threads - 1)  # a core left to the build
    assert backend.compile_in_background() is False  # one build per chat
    assert background.start(backend.model, folder, compiled_dir(), "float32", "none") == package  # a second chat waits for it
    assert background.running(package)

    assert two_turns(backend)[0] == want[0]  # meanwhile the chat answers, eagerly
    wait_until_built(package)
    assert compiling.is_stored(package), package.with_suffix(".log").read_text()
    assert two_turns(backend) == want  # the next reply binds the stored step, with eager's tokens (float32)
    assert backend.compiled == "aot" and torch.get_num_threads() == threads
    assert not package.with_suffix(".lock").exists()


def test_a_failed_background_build_is_told_once_and_not_retried(tiny_model_factory, monkeypatch, capsys):
    """A machine without a working C++ compiler (CXX=/bin/false for the build): the chat says so once, between
    replies, gets its thread back, and later chats do not try again."""
    import torch

    monkeypatch.setenv("CXX", "/bin/false")  # read by the build process's inductor
    folder = tiny_model_factory("llama")
    backend = LocalBackend(dtype="float32", compile="auto")
    backend.load(str(folder))
    threads = torch.get_num_threads()
    assert backend.compile_in_background()
    package = compiling.package_path(backend.model, folder, compiled_dir())
    wait_until_built(package)
    assert package.with_suffix(".failed").exists() and not compiling.is_stored(package)
    two_turns(backend)
    err = capsys.readouterr().err
    assert err.count("the background build failed") == 1 and "--compile on tries again" in err
    assert "Traceback" not in err
    assert backend.compiled == "eager" and torch.get_num_threads() == threads
    assert backend.compile_in_background() is False


def test_what_a_background_build_does_not_start(tiny_model_factory, monkeypatch, capsys):
    folder = tiny_model_factory("llama")
    backend = LocalBackend(dtype="float32", compile="auto")
    backend.load(str(folder))
    package = compiling.package_path(backend.model, folder, compiled_dir())

    # A build that fails leaves its reason, and no lock, behind (the model changed since the chat asked, here).
    wrong = package.with_name("000000000000-000000000000.pt2")
    wrong.parent.mkdir(parents=True)
    wrong.with_suffix(".lock").write_text(str(os.getpid()))
    assert background.main([str(folder), "float32", "none", str(wrong)]) == 1
    assert "builds" in wrong.with_suffix(".failed").read_text() and not wrong.with_suffix(".lock").exists()
    assert "background build failed" in capsys.readouterr().err

    # A variant that failed before is not retried by later chats...
    package.with_suffix(".failed").write_text("no C++ compiler\n")
    assert backend.compile_in_background() is False
    # ...but `--compile on` tries again, in the foreground (the build itself is stubbed: it is tested elsewhere).
    def failing_build(model, path):
        raise compiling.CompileError("could not compile the decode step: stubbed")

    monkeypatch.setattr(compiling, "build", failing_build)
    with pytest.raises(compiling.CompileError):
        compiling.use(backend.model, "on", folder, compiled_dir())
    assert not package.with_suffix(".failed").exists()

    for mode in ("off", "on"):  # only auto builds in the background
        other = LocalBackend(dtype="float32", compile=mode)
        other.compiled = "eager"
        other.model, other.model_path = backend.model, folder
        assert other.compile_in_background() is False
    windowed = LocalBackend(dtype="float32", compile="auto")
    windowed.load(str(tiny_model_factory("mistral", sliding_window=8)))
    assert windowed.compile_in_background() is False  # not covered by the compiled path


def test_no_background_build_without_the_memory_for_it(tiny_model_factory, monkeypatch):
    """A machine short of memory cannot be arranged here, so what the kernel reports is replaced (the test says so):
    with less available than a build takes, nothing starts, the chat says why in one line and keeps both threads."""
    import torch

    folder = tiny_model_factory("llama")
    backend = LocalBackend(dtype="float32", compile="auto", threads=2)
    backend.load(str(folder))
    needed = background.memory_needed(folder, "float32")
    assert needed > background.BUILD_BASE_BYTES  # the weights count
    monkeypatch.setattr(background, "available_memory", lambda: needed - 1)
    heard = []
    backend.on_notice = heard.append
    assert backend.compile_in_background() is False
    (notice,) = heard
    assert notice.kind == "warning" and "GB of memory is available" in notice.text
    assert notice.text.startswith("not compiling the decode step in the background: ")
    assert backend._pending_package is None and torch.get_num_threads() == 2
    assert not compiled_dir().is_dir() or not list(compiled_dir().glob("*.lock"))  # no builder started


def stop_builder() -> None:
    """Stop the build a CLI test started: it outlives its chat or server by design, but not the test."""
    locks = list(compiled_dir().glob("*.lock"))
    assert len(locks) == 1
    deadline = time.monotonic() + 10
    while not locks[0].read_text().strip() and time.monotonic() < deadline:  # the starter writes the id just after
        time.sleep(0.1)
    try:
        os.kill(int(locks[0].read_text()), signal.SIGTERM)
    except (ProcessLookupError, FileNotFoundError):
        pass  # it finished already


def test_the_server_builds_in_the_background_too(tiny_llama_dir):
    """One request at a time (--parallel 1) is the path that uses the compiled step; batched steps run eagerly, so a
    batching server builds nothing."""
    chatcli = str(Path(sys.executable).with_name("chatcli"))
    proc = subprocess.Popen([chatcli, "serve", "--port", "0", "--model", str(tiny_llama_dir), "--compile", "auto", "--parallel", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        assert any("compiling the decode step in the background" in ln for ln in lines), lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    stop_builder()


def test_the_chat_says_it_is_building_and_when_it_switches(tiny_llama_dir, tmp_path):
    """The REPL in a pty under `--compile auto`: one line says what runs in the background, and one line, after the
    first reply that uses the compiled step, says so. The chat ends in os._exit, and leaves no extracted package in
    $TMPDIR (AOTInductor's loader removes its copy only in a destructor that os._exit skips)."""
    from tests.test_repl import Term

    t = Term("--model", str(tiny_llama_dir), "--compile", "auto", "--max-tokens", "4", prompt=r"\d+/\d+ tokens",
             env={"TMPDIR": str(tmp_path)})
    shown = t.prompt()
    assert "compiling the decode step in the background" in shown
    t.line("hello")
    assert "compiled decode step is in use" not in t.prompt()  # this reply ran before the build could finish
    (lock,) = compiled_dir().glob("*.lock")
    wait_until_built(lock.with_suffix(".pt2"))
    t.line("hello again")
    assert "the compiled decode step is in use from this reply on" in t.prompt()
    t.line("and again")
    assert "compiled decode step is in use" not in t.prompt()  # said once
    assert t.close() == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("aotinductor", "chatcli-aoti"))]
