"""Private by default: what `make dashboard` listens on, that the dashboard only reads the
store, that downloads cannot name paths, and that cluster.yaml keeps Ray's token auth on
and credentials out (docs/security.md)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "dashboard"))
import views  # noqa: E402
from test_dashboard import build_store, goto, run_app  # noqa: E402

START_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _session_pids(sid: int) -> set[int]:
    """PIDs whose session id is `sid`: the process tree started with start_new_session."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # after ")": state ppid pgrp session
                pids.add(int(entry))
    return pids


def _listening(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets in LISTEN state that `pids` own (from `ss -ltnp`)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append(line.split()[3])
    return found


def _non_loopback_address() -> str | None:
    """An IPv4 address of this host outside 127.0.0.0/8 (the one a LAN peer would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture
def dashboard_process(tmp_path):
    """`make dashboard` on a free port over an empty store, in its own session; stopped by
    killing that session's process group (the PID this fixture started), never by name."""
    port = _free_port()
    log = tmp_path / "dashboard.log"
    env = {**os.environ, "STREAMLIT_SERVER_HEADLESS": "true"}
    env.pop("STREAMLIT_SERVER_ADDRESS", None)
    env.pop("STREAMLIT_BROWSER_GATHER_USAGE_STATS", None)
    with open(log, "wb") as out:
        # -o: the venv stamp counts as up to date, so only the dashboard's own command runs
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "dashboard",
             f"STORE={tmp_path / 'store'}", f"DASHBOARD_PORT={port}"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        yield proc, port, log
    finally:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(grace)
                if not _session_pids(proc.pid):
                    break
            except subprocess.TimeoutExpired:
                continue


def test_make_dashboard_listens_on_loopback_only(dashboard_process):
    proc, port, log = dashboard_process
    deadline = time.monotonic() + START_TIMEOUT_S
    addresses: list[str] = []
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"make dashboard exited early:\n{log.read_text()}"
        addresses = _listening(_session_pids(proc.pid))
        if any(a.endswith(f":{port}") for a in addresses):
            break
        time.sleep(0.5)
    assert any(a.endswith(f":{port}") for a in addresses), f"not listening:\n{log.read_text()}"
    assert all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::1]") for a in addresses), addresses
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as r:
        assert r.read() == b"ok"
    lan = _non_loopback_address()
    if lan is not None:  # the same port on the host's own LAN address refuses the connection
        with pytest.raises(OSError), socket.create_connection((lan, port), timeout=5):
            pass
    assert "usage statistics" not in log.read_text()


def test_streamlit_config_is_private_by_default():
    import tomllib
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["browser"]["gatherUsageStats"] is False
    makefile = (REPO / "Makefile").read_text()
    assert "DASHBOARD_ADDRESS ?= 127.0.0.1" in makefile
    assert "--browser.gatherUsageStats false" in makefile


def _tree_state(root: Path) -> dict[str, tuple[int, int, str]]:
    """(size, mtime_ns, sha256) of every file under `root`, and every directory."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            state[str(path)] = (path.stat().st_size, path.stat().st_mtime_ns,
                                hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            state[str(path)] = (0, path.stat().st_mtime_ns, "dir")
    return state


def test_dashboard_never_writes_to_the_store(tmp_path, monkeypatch):
    root = build_store(tmp_path / "results")
    before = _tree_state(tmp_path)
    at = run_app(root, monkeypatch)
    for page in ("Robustness curves", "AUILC tables", "Methods", "Trial explorer", "Downloads"):
        goto(at, page)
    at.sidebar.button(key="reload").click().run()
    assert _tree_state(tmp_path) == before  # nothing created, modified or removed


@pytest.mark.parametrize("name, expected", [
    ("trials_dqf_mosi", "trials_dqf_mosi"), ("../../etc/passwd", "etc_passwd"),
    ("/abs/path", "abs_path"), ("a\\b\x00c", "a_b_c"), ("..", "download"), ("", "download")])
def test_download_names_are_bare_file_names(name, expected):
    assert views.download_name(name) == expected


def test_a_study_named_like_a_path_downloads_under_a_bare_name(tmp_path, monkeypatch):
    root = build_store(tmp_path / "results")
    evil = "../../../tmp/evil"
    for table in ("studies", "trials"):  # a hand-made store: the writer would refuse this name
        for path in (root / table / "study=dqf_iemocap").glob("*.parquet"):
            t = pq.read_table(path)
            column = t.schema.get_field_index("study")
            pq.write_table(t.set_column(column, "study", [[evil] * t.num_rows]), path)
    at = run_app(root, monkeypatch, "Trial explorer")
    at.selectbox(key="trial_study").set_value(evil).run()
    assert not at.exception
    names = [d["table_name"] for d in at.session_state["downloads"].values()]
    assert "trials_tmp_evil" in names
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", n) for n in names), names


# --- cluster.yaml --------------------------------------------------------------------------
def _cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_keeps_ray_token_auth_on_every_node():
    config = _cluster()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), (key, start)
    assert all("RAY_AUTH_MODE=disabled" not in c for k, v in config.items()
               if k.endswith("commands") for c in v)
    # every node gets the token generated on the laptop (`ray get-auth-token --generate`)
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_cluster_dashboard_is_not_published_on_every_interface():
    head = " ".join(_cluster()["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" not in head and "--dashboard-host=127.0.0.1" in head


def test_cluster_yaml_holds_no_credentials():
    text = (REPO / "cluster.yaml").read_text()
    for pattern in (r"AKIA[0-9A-Z]{16}", r"aws_secret_access_key", r"aws_access_key_id",
                    r"AWS_SECRET", r"BEGIN [A-Z ]*PRIVATE KEY", r"RAY_AUTH_TOKEN\s*="):
        assert not re.search(pattern, text, re.IGNORECASE), pattern
    nodes = _cluster()["available_node_types"]
    workers = [n for name, n in nodes.items() if name != _cluster()["head_node_type"]]
    assert all("IamInstanceProfile" in n["node_config"] for n in workers)  # roles, not keys
