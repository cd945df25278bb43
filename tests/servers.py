"""Real servers started by the tests themselves, on 127.0.0.1 and free ports: rclone's S3, moto's S3, Prefect."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found next to {sys.executable} nor on PATH; install the test extras")
    return found


def _wait(check, proc: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not start within {timeout} s:\n{log.read_text()[-3000:]}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key: str
    secret: str
    bucket: str
    root: Path | None  # folder behind rclone (None for moto)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }


@contextmanager
def rclone_s3(workdir: Path, bucket: str = "synth") -> Iterator[S3Server]:
    """``rclone serve s3`` over a folder; each top-level folder is a bucket. Ignores If-None-Match."""
    root = workdir / "s3root"
    (root / bucket).mkdir(parents=True)
    port = free_port()
    key, secret = "synthkey", "synthsecret0123456789"
    log = workdir / "rclone.log"
    env = {**os.environ, "RCLONE_CONFIG": str(workdir / "rclone.conf")}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [_tool("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{key},{secret}", str(root)],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )
    try:
        _wait(lambda: _port_open(port), proc, log, "rclone serve s3", 30)
        yield S3Server(f"http://127.0.0.1:{port}", key, secret, bucket, root)
    finally:
        _stop(proc)


@contextmanager
def moto_s3(workdir: Path, bucket: str = "synth") -> Iterator[S3Server]:
    """moto's standalone S3 server: implements conditional writes (If-None-Match → 412)."""
    port = free_port()
    log = workdir / "moto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([_tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _port_open(port), proc, log, "moto_server", 30)
        server = S3Server(f"http://127.0.0.1:{port}", "motokey", "motosecret", bucket, None)
        import boto3

        boto3.client(
            "s3", endpoint_url=server.endpoint, aws_access_key_id=server.key,
            aws_secret_access_key=server.secret, region_name="us-east-1",
        ).create_bucket(Bucket=bucket)
        yield server
    finally:
        _stop(proc)


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    home: Path

    def env(self) -> dict[str, str]:
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def prefect_server(workdir: Path, *, ui: bool = False) -> Iterator[PrefectServer]:
    """A real ``prefect server start`` with its own home and SQLite database."""
    home = workdir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_UI_API_URL": api,
    }
    log = workdir / "prefect-server.log"
    args = [_tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"]
    args.append("--ui" if ui else "--no-ui")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        _wait(lambda: _healthy(api), proc, log, "prefect server", 120)
        yield PrefectServer(api, home)
    finally:
        _stop(proc)


@contextmanager
def using_prefect(server: PrefectServer) -> Iterator[PrefectServer]:
    """Point this process (env and Prefect's settings) at ``server`` for the block, then restore."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    old = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_HOME: str(server.home)}):
            yield server
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def prefect_worker(pool: str, env: dict[str, str], workdir: Path, cwd: Path) -> Iterator[Path]:
    """``prefect worker start --pool <pool>`` (a process worker); yields its log file."""
    log = workdir / f"worker-{pool}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [_tool("prefect"), "worker", "start", "--pool", pool, "--name", f"test-{pool}", "--type", "process"],
            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd,
        )
    try:
        _wait(lambda: b"started" in log.read_bytes().lower(), proc, log, f"prefect worker ({pool})", 120)
        yield log
    finally:
        _stop(proc)


__all__ = [
    "PrefectServer",
    "S3Server",
    "free_port",
    "moto_s3",
    "prefect_server",
    "prefect_worker",
    "rclone_s3",
    "using_prefect",
]
