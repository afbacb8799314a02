"""A real S3-compatible server for the tests: S3Proxy on 127.0.0.1 with a filesystem backend.

S3Proxy (Apache-2.0) comes from Maven (``infra/s3/pom.xml``) and runs on the machine's Java;
it starts in about a second. Requests are plain HTTP with AWS Signature V4, the same wire
protocol as AWS S3, SeaweedFS or Ceph. Buckets are created with a small signed request
(``create_bucket``), because obstore cannot create buckets and boto3 is not a dependency.

To make the store refuse writes, ``refuse_writes()`` restarts the same server (same port,
same data) in S3Proxy's read-only mode; ``stop()`` makes it unreachable altogether.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from devstack.kafka import REPO_ROOT, fetch_maven_jars, java_flags

__all__ = ["S3Server", "S3ServerError", "ensure_built", "sigv4_request"]

_POM = REPO_ROOT / "infra" / "s3" / "pom.xml"
_LOGBACK = REPO_ROOT / "infra" / "s3" / "logback.xml"
DEFAULT_LIBS = REPO_ROOT / ".cache" / "s3proxy" / "libs"


class S3ServerError(RuntimeError):
    """The S3 server could not be built, started or asked something; the message says why."""


def ensure_built(cache_dir: Path = DEFAULT_LIBS) -> Path:
    """Fetch S3Proxy and its dependencies into ``cache_dir`` once; return the jar dir."""
    try:
        return fetch_maven_jars(_POM, cache_dir)
    except RuntimeError as exc:
        raise S3ServerError(str(exc)) from exc


def _free_port(host: str) -> int:
    """A port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _hmac(key: bytes, msg: str) -> bytes:
    """HMAC-SHA256, the step function of the SigV4 key derivation."""
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_request(
    method: str,
    url: str,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    body: bytes = b"",
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """Send one AWS SigV4-signed S3 request; return (HTTP status, body). No retries.

    Enough of SigV4 for bucket-level calls in tests: path-style URL, no query parameters.
    """
    parts = urllib.parse.urlsplit(url)
    now = dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    path = urllib.parse.quote(parts.path or "/", safe="/-_.~")
    headers = {
        "host": parts.netloc,
        "x-amz-content-sha256": payload_hash,
        "x-amz-date": amz_date,
    }
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            path,
            "",
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            payload_hash,
        ]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret_key}".encode()
    for step in (date, region, "s3", "aws4_request"):
        key = _hmac(key, step)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    del headers["host"]  # urllib sets Host itself, to the same value
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


class S3Server:
    """An S3Proxy process on loopback, or (``external``) a server someone else runs.

    ``endpoint_url``, ``access_key``, ``secret_key``, ``region`` and ``bucket`` are what a
    client needs. ``start``/``stop`` manage the process; ``refuse_writes``/``accept_writes``
    switch it to and from read-only mode without changing its port or data.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        access_key: str = "mxgate-test",
        secret_key: str = "mxgate-test-secret",
        region: str = "us-east-1",
        bucket: str = "mxgate-test",
        heap: str = "256m",
        libs: Path | None = None,
    ) -> None:
        """Describe the server; nothing is fetched or started until ``start``."""
        self.workdir = Path(workdir).resolve()
        self.host = host
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.bucket = bucket
        self.heap = heap
        self.libs = libs
        self.port = 0
        self.read_only = False
        self._external_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def external(
        cls,
        endpoint_url: str,
        *,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        bucket: str = "mxgate-test",
    ) -> S3Server:
        """An S3Server for a server that is already running (e.g. docker compose)."""
        server = cls(
            Path("."), access_key=access_key, secret_key=secret_key, region=region, bucket=bucket
        )
        server._external_url = endpoint_url.rstrip("/")
        return server

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the server."""
        if self._external_url:
            return self._external_url
        if not self.port:
            raise S3ServerError("S3Server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The server's stdout/stderr log."""
        return self.workdir / "s3proxy.log"

    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60) -> str:
        """Fetch S3Proxy if needed, start it, wait until it answers; return the endpoint URL.

        Restarting after ``stop`` keeps the port and the stored objects.
        """
        if self._external_url:
            return self._external_url
        if self.running():
            return self.endpoint_url
        libs = self.libs if self.libs is not None else ensure_built()
        if not self.port:
            self.port = _free_port(self.host)
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = self.workdir / "s3proxy.properties"
        props.write_text(
            "\n".join(
                [
                    f"s3proxy.endpoint=http://{self.host}:{self.port}",
                    "s3proxy.authorization=aws-v2-or-v4",
                    f"s3proxy.identity={self.access_key}",
                    f"s3proxy.credential={self.secret_key}",
                    f"s3proxy.read-only-blobstore={'true' if self.read_only else 'false'}",
                    # obstore's multi-object DELETE sends an x-amz-checksum header that
                    # S3Proxy does not know; real S3 accepts it, so let S3Proxy ignore it.
                    "s3proxy.ignore-unknown-headers=true",
                    "jclouds.provider=filesystem-nio2",
                    # The nio2 backend insists on credentials of its own; they guard nothing.
                    "jclouds.identity=local",
                    "jclouds.credential=local",
                    f"jclouds.filesystem.basedir={data}",
                    "",
                ]
            )
        )
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                "java",
                *java_flags(self.heap),
                f"-Dlogback.configurationFile={_LOGBACK}",
                "-cp",
                f"{libs}/*",
                "org.gaul.s3proxy.Main",
                "--properties",
                str(props),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.responds():
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._release()
                raise S3ServerError(f"S3Proxy exited with {code}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise S3ServerError(f"S3Proxy not ready in {timeout}s:\n{self._log_tail()}")
            time.sleep(0.1)
        return self.endpoint_url

    def stop(self, timeout: float = 20) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``timeout``); safe to call twice."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self._release()

    def refuse_writes(self) -> None:
        """Restart in read-only mode: reads work, every write is answered with an error."""
        self._restart(read_only=True)

    def accept_writes(self) -> None:
        """Restart in normal read-write mode (undoes ``refuse_writes``)."""
        self._restart(read_only=False)

    def responds(self) -> bool:
        """True when the server answers a signed ListBuckets with 200 (it is up, creds work)."""
        try:
            status, _ = self.request("GET", "/", timeout=2)
        except OSError:
            return False
        return status == 200

    def request(
        self, method: str, path: str, body: bytes = b"", timeout: float = 10
    ) -> tuple[int, bytes]:
        """Send a SigV4-signed request for ``path`` (e.g. ``/bucket``); return (status, body)."""
        return sigv4_request(
            method,
            self.endpoint_url + path,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            body=body,
            timeout=timeout,
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` through the S3 API; an existing bucket of ours is fine."""
        status, body = self.request("PUT", f"/{name}")
        if status == 200 or (status == 409 and b"BucketAlreadyOwnedByYou" in body):
            return
        raise S3ServerError(f"creating bucket {name!r} failed: HTTP {status}: {body[:500]!r}")

    def __enter__(self) -> S3Server:
        """Start the server for a ``with`` block."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server when the ``with`` block ends."""
        self.stop()

    def _restart(self, *, read_only: bool) -> None:
        """Stop and start again on the same port with another write mode."""
        if self._external_url:
            raise S3ServerError("cannot switch the write mode of an external server")
        self.stop()
        self.read_only = read_only
        self.start()

    def _release(self) -> None:
        """Reap the process and close the log file, so nothing leaks."""
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, lines: int = 60) -> str:
        """The last lines of the server log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
