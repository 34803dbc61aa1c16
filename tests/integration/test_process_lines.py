"""The Procfile's lines, run the way process managers run them, and docker-compose.yml running the
same lines (docker is not needed: the compose file is read, and its commands run here).

- Every Procfile process has a compose service that runs its line: exec form is the line's words;
  `sh -c` form is the line itself, under `exec` (so the process, not a shell, is the container's
  PID 1 and gets `docker stop`'s SIGTERM), after compose's `$$` -> `$` unescaping.
- The worker line, through `sh -c` as honcho runs it, listens on EXTRACT_QUEUE with a 60 s worker
  TTL; the compose form of it is the rq process itself and stops cleanly on SIGTERM.
- The scheduler line stays up without a schedule (saying so), stops with 0 on SIGTERM, and refuses
  a malformed EXTRACT_SCHEDULE naming it.
- The web service's health check asks GET /ready, and fails when the app is not ready.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis
from werkzeug.serving import make_server

from config import Config
from tests.conftest import PROJECT_DIR, free_port, wait_for

pytestmark = pytest.mark.timeout(60)

# The project venv's executables (rq, python), as an activated venv or the image's PATH gives them.
VENV_BIN = PROJECT_DIR / ".venv" / "bin" if (PROJECT_DIR / ".venv" / "bin").is_dir() else Path(sys.executable).parent
OTHER_QUEUE = "some-other-queue"
# Inherited settings that would change what the lines do.
_CLEARED = ("REDIS_URL", "WAREHOUSE_URL", "EXTRACT_QUEUE", "EXTRACT_SCHEDULE", "PYTHONPATH")


# -- the Procfile ---------------------------------------------------------------------------------

def procfile() -> dict[str, str]:
    """{process: command line}, in the Procfile's order."""
    lines: dict[str, str] = {}
    for raw in (PROJECT_DIR / "Procfile").read_text().splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(\S.*)", raw)
        assert match, f"not a Procfile line: {raw!r}"
        assert match[1] not in lines, f"Procfile names {match[1]!r} twice"
        lines[match[1]] = match[2].strip()
    return lines


# -- a reader for the YAML that docker-compose.yml uses --------------------------------------------
# Block mappings and sequences, flow sequences (over several lines too), plain / 'single' / "double"
# quoted scalars (all kept as strings), comments, anchors, aliases and `<<` merges. Anything else
# raises, so a construct this reader does not know fails the test instead of being misread.

class YamlSubsetError(ValueError):
    pass


_TOKEN_START = " \t[,{"


def _scan(text: str):
    """(index, character, inside a quoted scalar) for each character of `text`: a quote opens a
    scalar at the start of a token; '' is a quote inside 'single', \\ escapes inside "double"."""
    quote, i = None, 0
    while i < len(text):
        ch = text[i]
        if quote == "'":
            if ch == "'" and text[i + 1:i + 2] == "'":
                yield i, ch, True
                i += 1
            elif ch == "'":
                quote = None
            yield i, ch, True
        elif quote == '"':
            if ch == "\\":
                yield i, ch, True
                i += 1
                ch = text[i:i + 1]
            elif ch == '"':
                quote = None
            yield i, ch, True
        elif ch in "'\"" and (i == 0 or text[i - 1] in _TOKEN_START):
            quote = ch
            yield i, ch, True
        else:
            yield i, ch, False
        i += 1
    if quote:
        raise YamlSubsetError(f"quoted scalar across lines: {text!r}")


def _strip_comment(line: str) -> str:
    try:
        for i, ch, quoted in _scan(line):
            if ch == "#" and not quoted and (i == 0 or line[i - 1] in " \t"):
                return line[:i].rstrip()
    except YamlSubsetError:
        pass  # a flow collection over several lines is checked once joined
    return line.rstrip()


def _depth(text: str) -> int:
    """Open brackets left after `text` (outside quotes)."""
    depth = 0
    for _, ch, quoted in _scan(text):
        if not quoted and ch in "[{":
            depth += 1
        elif not quoted and ch in "]}":
            depth -= 1
    return depth


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for raw in text.splitlines():
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlSubsetError(f"tab indentation: {raw!r}")
        line = _strip_comment(raw)
        if not line.strip():
            continue
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        else:
            pending = (len(line) - len(line.lstrip()), line.strip())
        if _depth(pending[1]) == 0:
            out.append(pending)
            pending = None
    if pending is not None:
        raise YamlSubsetError(f"unclosed flow collection: {pending[1]!r}")
    return out


def _split_key(content: str) -> tuple[str, str] | None:
    """(key, rest) of `key: rest` / `key:`, the colon outside quotes; None if not a mapping entry."""
    if content[:1] in "[{":
        return None
    for i, ch, quoted in _scan(content):
        if not quoted and ch == ":" and (i + 1 == len(content) or content[i + 1] == " "):
            return _scalar(content[:i].strip()), content[i + 1:].strip()
    return None


def _scalar(token: str) -> str:
    if token.startswith("'"):
        if len(token) < 2 or not token.endswith("'") or "'" in token[1:-1].replace("''", ""):
            raise YamlSubsetError(f"bad single-quoted scalar: {token!r}")
        return token[1:-1].replace("''", "'")
    if token.startswith('"'):
        try:
            return json.loads(token)
        except json.JSONDecodeError as exc:
            raise YamlSubsetError(f"bad double-quoted scalar: {token!r}") from exc
    if not token or token[0] in "&*!|>{[%@`'\"?:,]}#" or token == "-" or token.startswith("- ") \
            or ": " in token or " #" in token:
        raise YamlSubsetError(f"unsupported scalar: {token!r}")
    return token


def _flow_sequence(text: str) -> list:
    if not (text.startswith("[") and text.endswith("]")):
        raise YamlSubsetError(f"unsupported flow collection: {text!r}")
    inner = text[1:-1]
    items, start = [], 0
    for i, ch, quoted in _scan(inner):
        if quoted:
            continue
        if ch in "[]{}":
            raise YamlSubsetError(f"nested flow collection: {text!r}")
        if ch == ",":
            items.append(inner[start:i].strip())
            start = i + 1
    if inner[start:].strip():
        items.append(inner[start:].strip())
    return [_scalar(item) for item in items]


class _Reader:
    def __init__(self, text: str):
        self.lines = _logical_lines(text)
        self.anchors: dict[str, object] = {}
        self.i = 0

    def document(self):
        node = self.block(self.lines[0][0])
        if self.i != len(self.lines):
            raise YamlSubsetError(f"unexpected line: {self.lines[self.i][1]!r}")
        return node

    def value(self, rest: str, indent: int):
        """The value after `key:` or `- ` on a line at `indent`."""
        anchor = None
        if rest.startswith("&"):
            anchor, _, rest = rest[1:].partition(" ")
            rest = rest.strip()
        if rest.startswith("*"):
            if rest[1:] not in self.anchors:
                raise YamlSubsetError(f"unknown alias {rest!r}")
            node = self.anchors[rest[1:]]
        elif rest.startswith("["):
            node = _flow_sequence(rest)
        elif rest:
            node = _scalar(rest)
        elif self.i < len(self.lines) and self.lines[self.i][0] > indent:
            node = self.block(self.lines[self.i][0])
        elif self.i < len(self.lines) and self.lines[self.i][0] == indent and self.lines[self.i][1].startswith("- "):
            node = self.block(indent)  # a sequence at its key's indentation
        else:
            node = None
        if anchor:
            self.anchors[anchor] = node
        return node

    def block(self, indent: int):
        first = self.lines[self.i][1]
        if first == "-" or first.startswith("- "):
            items = []
            while self.i < len(self.lines) and self.lines[self.i][0] == indent \
                    and (self.lines[self.i][1] == "-" or self.lines[self.i][1].startswith("- ")):
                rest = self.lines[self.i][1][1:].strip()
                if _split_key(rest) is not None:
                    raise YamlSubsetError(f"mapping inside a sequence item: {rest!r}")
                self.i += 1
                items.append(self.value(rest, indent))
            return items
        mapping: dict = {}
        merged: dict = {}
        while self.i < len(self.lines) and self.lines[self.i][0] == indent:
            entry = _split_key(self.lines[self.i][1])
            if entry is None:
                raise YamlSubsetError(f"expected `key: value`: {self.lines[self.i][1]!r}")
            key, rest = entry
            self.i += 1
            node = self.value(rest, indent)
            if key == "<<":
                if not isinstance(node, dict):
                    raise YamlSubsetError("`<<` needs a mapping")
                merged.update(node)
            elif key in mapping:
                raise YamlSubsetError(f"duplicate key {key!r}")
            else:
                mapping[key] = node
        if self.i < len(self.lines) and self.lines[self.i][0] > indent:
            raise YamlSubsetError(f"bad indentation: {self.lines[self.i][1]!r}")
        return {**merged, **mapping}


def load_yaml(text: str):
    return _Reader(text).document()


def compose_unescape(value: str) -> str:
    """`value` as the container receives it when the host sets no variable: `$$` -> `$`, and a
    lone `$` is refused (compose would replace it from the host's environment)."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "$":
            if value[i + 1:i + 2] == "$":
                out.append("$")
                i += 2
                continue
            raise AssertionError(f"compose would interpolate {value[i:i + 20]!r}... from the host: write $$")
        out.append(value[i])
        i += 1
    return "".join(out)


def compose() -> dict:
    return load_yaml((PROJECT_DIR / "docker-compose.yml").read_text())


def runs_line(command, line: str) -> bool:
    """Whether a compose `command` runs the Procfile `line`."""
    if isinstance(command, str):
        command = shlex.split(command)
    command = [compose_unescape(word) for word in command]
    if command[:2] == ["sh", "-c"] and len(command) == 3:
        return command[2] == f"exec {line}"
    return command == shlex.split(line)


# -- running the lines -----------------------------------------------------------------------------

class Line:
    """A command line run by `sh -c` in the project directory, in a session of its own."""

    def __init__(self, command: str, **env: str):
        base = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        base["PATH"] = f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="process-line-", suffix=".log", delete=False)
        self.process = subprocess.Popen(["sh", "-c", command], cwd=PROJECT_DIR, env={**base, **env},
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def child(self) -> int:
        """The pid of the command (the shell's child, or the shell itself when it exec'd)."""
        def found():
            try:
                children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            except FileNotFoundError:
                return None
            return int(children[0]) if children else None
        try:
            return wait_for(found, timeout=2, what="the command under sh")
        except AssertionError:
            return self.process.pid

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self.log.close()
        os.unlink(self.log.name)


@pytest.fixture
def run_line():
    lines: list[Line] = []

    def run(command: str, **env: str) -> Line:
        line = Line(command, **env)
        lines.append(line)
        return line

    yield run
    for line in lines:
        line.stop()


def group_gone(line: Line) -> bool:
    """Whether every process of the line's session has exited (zombies count as exited)."""
    line.process.poll()  # reap the shell
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == line.process.pid and state != "Z":
            return False
    return True


def listening(client: redis.Redis, queue: str) -> set[str]:
    return {name.decode() for name in client.smembers(f"rq:workers:{queue}")}


def wait_listening(line: Line, client: redis.Redis, queue: str) -> str:
    def registered():
        if line.process.poll() is not None:
            raise AssertionError(f"the worker exited ({line.process.returncode}): {line.output()}")
        return listening(client, queue)
    names = wait_for(registered, timeout=10, what=f"an rq worker listening on {queue}")
    assert len(names) == 1, names
    return names.pop()


# -- the tests -------------------------------------------------------------------------------------

def test_the_yaml_reader_reads_what_it_knows_and_refuses_the_rest():
    text = """
x: &a
  k: 'it''s'   # comment
  l: ["p", 'q r', "#s", plain]
top:
  <<: *a
  k: own
  seq:
  - "$$X"
  - two
  m: [a,
      b]
"""
    assert load_yaml(text) == {"x": {"k": "it's", "l": ["p", "q r", "#s", "plain"]},
                               "top": {"k": "own", "l": ["p", "q r", "#s", "plain"], "seq": ["$$X", "two"],
                                       "m": ["a", "b"]}}
    for bad in ("a: |\n  text\n", "a: {b: c}\n", "a:\n  - b: c\n", "a: b\na: c\n", "a: *nope\n", "a: 'x\n  y'\n"):
        with pytest.raises(YamlSubsetError):
            load_yaml(bad)
    assert compose_unescape('"$${Q:-d}" "$$R"') == '"${Q:-d}" "$R"'
    with pytest.raises(AssertionError, match="interpolate"):
        compose_unescape('"$REDIS_URL"')


def test_every_procfile_process_has_a_compose_service_running_its_line():
    lines = procfile()
    assert set(lines) >= {"web", "worker", "scheduler"}
    assert lines["scheduler"] == "python -m workers.scheduler"
    services = compose()["services"]
    for name, line in lines.items():
        assert name in services, f"docker-compose.yml has no {name!r} service for the Procfile's line"
        assert runs_line(services[name]["command"], line), (
            f"compose's {name} runs {services[name]['command']!r}, the Procfile {line!r}")
    # The worker's line needs a shell (it expands REDIS_URL and EXTRACT_QUEUE).
    assert services["worker"]["command"][:2] == ["sh", "-c"]


def test_web_worker_and_scheduler_agree_on_the_queue_and_see_the_schedule():
    document = compose()
    default = re.search(r'"\$\{EXTRACT_QUEUE:-([^}]*)\}"', procfile()["worker"])
    assert default, "the worker line names no EXTRACT_QUEUE default"
    saved = os.environ.pop("EXTRACT_QUEUE", None)
    try:
        assert default[1] == Config.from_env().EXTRACT_QUEUE, "the Procfile's default queue is not config.py's"
    finally:
        if saved is not None:
            os.environ["EXTRACT_QUEUE"] = saved
    for name in ("web", "worker", "scheduler"):
        environment = document["services"][name]["environment"]
        assert environment["EXTRACT_QUEUE"] == f"${{EXTRACT_QUEUE:-{default[1]}}}", name
        assert environment["EXTRACT_SCHEDULE"] == "${EXTRACT_SCHEDULE:-}", name
        assert environment["REDIS_URL"] == "redis://redis:6379/0", name


def test_the_web_health_check_asks_ready_and_fails_when_not_ready(make_app, redis_url, scenario_sqlite):
    check = compose()["services"]["web"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"], check
    code = check[3]
    assert "http://127.0.0.1:25000/ready" in code, code

    def probe(app) -> int:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            here = code.replace("127.0.0.1:25000", f"127.0.0.1:{server.server_port}")
            return subprocess.run([sys.executable, "-c", here], capture_output=True, timeout=10).returncode
        finally:
            server.shutdown()
            thread.join(5)

    assert probe(make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite, EXTRACT_ON_START=False)) == 0
    no_redis = f"redis://127.0.0.1:{free_port()}/0"
    assert probe(make_app(REDIS_URL=no_redis, WAREHOUSE_URL=scenario_sqlite, EXTRACT_ON_START=False)) != 0


def test_the_worker_line_listens_on_extract_queue(run_line, redis_url, redis_server):
    client = redis_server.client()
    worker = run_line(procfile()["worker"], REDIS_URL=redis_url, EXTRACT_QUEUE=OTHER_QUEUE)
    name = wait_listening(worker, client, OTHER_QUEUE)
    assert client.exists(name), "the worker's registration is not there"
    assert not listening(client, "feature-extraction")
    # --worker-ttl 60: RQ keeps the registration worker_ttl + 60 s past each heartbeat (420 + 60 by default).
    assert 60 < client.ttl(name) <= 120, client.ttl(name)
    # RQ registers a worker before it installs its signal handlers: a SIGTERM in between kills it
    # without unregistering. Stop it once it is listening, as a process manager would.
    wait_for(lambda: "Listening on" in worker.output(), timeout=10, what="the worker to listen")
    os.killpg(worker.process.pid, signal.SIGTERM)  # as honcho stops a process
    wait_for(lambda: group_gone(worker), timeout=8, what="the worker's processes to exit")
    assert not listening(client, OTHER_QUEUE), "the stopped worker still counts as listening"


def test_the_compose_worker_is_rq_itself_and_stops_cleanly_on_sigterm(run_line, redis_url, redis_server):
    client = redis_server.client()
    command = [compose_unescape(word) for word in compose()["services"]["worker"]["command"]]
    worker = run_line(command[2], REDIS_URL=redis_url, EXTRACT_QUEUE=OTHER_QUEUE)
    name = wait_listening(worker, client, OTHER_QUEUE)
    assert int(client.hget(name, "pid")) == worker.process.pid, "the shell did not exec rq (rq is not PID 1)"
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)  # docker stop signals PID 1 only
    assert worker.process.wait(8) == 0, worker.output()
    assert time.monotonic() - started < 5
    assert not listening(client, OTHER_QUEUE)


def test_the_scheduler_line_idles_without_a_schedule_and_stops_on_sigterm(run_line, redis_url):
    started = time.monotonic()
    scheduler = run_line(procfile()["scheduler"], REDIS_URL=redis_url)
    wait_for(lambda: scheduler.process.poll() is not None or "EXTRACT_SCHEDULE is not set" in scheduler.output(),
             timeout=8, what="the scheduler's log line")
    assert scheduler.process.poll() is None, f"the scheduler exited: {scheduler.output()}"
    time.sleep(max(0.0, started + 2.0 - time.monotonic()))
    assert scheduler.process.poll() is None, f"the scheduler exited: {scheduler.output()}"
    assert "idle" in scheduler.output()
    stopping = time.monotonic()
    os.kill(scheduler.child(), signal.SIGTERM)
    assert scheduler.process.wait(5) == 0, scheduler.output()  # sh returns the scheduler's status
    assert time.monotonic() - stopping < 3
    wait_for(lambda: group_gone(scheduler), timeout=3, what="the scheduler's processes to exit")


def test_the_scheduler_line_refuses_a_malformed_schedule(run_line, redis_url):
    scheduler = run_line(procfile()["scheduler"], REDIS_URL=redis_url, EXTRACT_SCHEDULE="not-a-schedule")
    status = scheduler.process.wait(8)
    assert status != 0
    assert "EXTRACT_SCHEDULE" in scheduler.output()
    assert "not-a-schedule" in scheduler.output()
