import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid

import pytest

from otpfast._compat import NO_EXTENSIONS, load_impl

ROOT = pathlib.Path(__file__).resolve().parents[1]
START_SCRIPT = ROOT / "tools" / "start-postgres.sh"
URL_VAR = "OTPFAST_TEST_POSTGRES_URL"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser):
    parser.addoption("--no-c-extensions", action="store_true", default=False,
                     help="test only the pure-Python core")


def _impl_params():
    params = [pytest.param("py", id="py")]
    if not NO_EXTENSIONS:
        params.insert(0, pytest.param("c", id="c", marks=pytest.mark.c_extension))
    return params


@pytest.fixture(scope="session", params=_impl_params())
def impl(request):
    """Each core twin in turn: otpfast._core ([c]) and otpfast._core_py ([py])."""
    if request.param == "c" and request.config.getoption("--no-c-extensions"):
        pytest.skip("--no-c-extensions")
    return load_impl(request.param)


def free_udp_port():
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, timeout=20):
    """SIGTERM a server subprocess and wait for it (killed if it does not stop in time)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _require_service(available, what):
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def require_service():
    """``require_service(available, what)``: skip a test that needs a system service
    (KDC, PostgreSQL, oathtool, radclient) outside CI; in CI a missing service fails it."""
    return _require_service


# --- PostgreSQL: $OTPFAST_TEST_POSTGRES_URL, or one throwaway cluster per pytest process ---

def _server_binaries_present() -> bool:
    if os.environ.get("PG_BINDIR"):
        return os.path.exists(os.path.join(os.environ["PG_BINDIR"], "initdb"))
    if os.path.exists("/usr/lib/postgresql/15/bin/initdb"):
        return True
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return False
    bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout
    return os.path.exists(os.path.join(bindir.strip(), "initdb"))


def cluster_dir() -> str:
    """One throwaway cluster per pytest process (start-postgres.sh is idempotent: a second
    start prints the URL again). Under /tmp:
    reachable by the `postgres` user when running as root."""
    return os.path.join(tempfile.gettempdir(), f"otpfast-pg-{os.getpid()}")


@pytest.fixture(scope="session")
def postgres_url(require_service):
    """The URL of a PostgreSQL database for the whole session."""
    try:
        import psycopg  # noqa: F401 - only checks that the extra is installed
    except ImportError:
        require_service(False, "psycopg (pip install 'otpfast[postgres]')")
    url = os.environ.get(URL_VAR)
    if url:
        yield url
        return
    require_service(_server_binaries_present(), "PostgreSQL server binaries (postgresql-15)")
    cluster = cluster_dir()
    try:
        started = subprocess.run([str(START_SCRIPT), cluster], capture_output=True, text=True,
                                 timeout=120)
        if started.returncode != 0:
            pytest.fail(f"tools/start-postgres.sh failed:\n{started.stderr}")
        yield started.stdout.strip()
    finally:
        if os.path.isdir(cluster):
            subprocess.run([str(START_SCRIPT), "--stop", cluster], capture_output=True,
                           timeout=60)
            shutil.rmtree(cluster, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_url):
    """A conninfo whose search_path is a fresh, empty schema (dropped after the test)."""
    import psycopg

    schema = f"otpfast_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield psycopg.conninfo.make_conninfo(postgres_url, options=f"-c search_path={schema}")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
