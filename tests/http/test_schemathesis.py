"""A schema-driven fuzzer (schemathesis) against the live server: the OpenAPI description
served at /openapi.json, TLS, an admin + verifier client's bearer credential. Every
operation (validate, operations and admin) gets generated requests, valid and invalid, and
stateful sequences (a user created, then shown, changed, deleted): no response may be a
5xx, have an undeclared status or content type, or break its schema. Bounded: a few dozen
examples per operation, well under two minutes."""
import importlib.util
import subprocess
import sys
import time

import pytest

from otpfast.datadir import DataDir
from ..conftest import stop_process

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance")
RUN = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"


@pytest.mark.service
@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(tmp_path, require_service):
    require_service(importlib.util.find_spec("schemathesis") is not None, "schemathesis")
    data_dir = DataDir(str(tmp_path / "data"))
    data_dir.init(rsa_bits=2048)
    admin = data_dir.admin()
    credential = admin.add_client("fuzz", verifier=True, admin=True)
    admin.add_account("alice", "hotp")
    admin.store.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpfast_cli", "serve", "--listen", "127.0.0.1:0", "--data-dir",
         data_dir.path, "--http", "127.0.0.1:0"], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        port = [line for line in lines if line.startswith("http ")][0].split()[1].rsplit(":", 1)[1]
        url = f"https://127.0.0.1:{port}"
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", RUN, "run", f"{url}/openapi.json", "--url", url,
             "--tls-verify", "false", "-H", f"Authorization: Bearer fuzz:{credential}",
             "--checks", CHECKS, "--max-examples", "25", "--seed", "20261204",
             "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "10",
             "--no-color"], capture_output=True, text=True, timeout=170, cwd=tmp_path)
        elapsed = time.monotonic() - started
    finally:
        stop_process(proc)
        proc.stdout.close()
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "25 selected / 25 total" in out.stdout and " passed" in out.stdout
    assert elapsed < 120, elapsed
    assert credential not in out.stdout
