"""End to end: a real MIT krb5kdc with OTP preauth asks otpfast's RADIUS front end.

A throwaway realm on loopback; the front end runs over the real services (data dir,
SQLite store, Distribution through the group-commit AsyncVerifier) on UDP and on a
UNIX socket; kdc.conf's [otp] stanzas and the kadmin commands come from
``otpfast krb5 config``. OTPs are requested from otpfast as an account client would.
krb5 1.20's libkrad sends no Message-Authenticator over UDP: the front end is configured
from the options an operator gives for it (``--radius-secret-file F`` for loopback with
``--radius-legacy-no-message-authenticator``); the UNIX socket needs nothing.
"""
import asyncio
import base64
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pyotp
import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast.radius.server import start_radius
from otpfast.services import masking

REALM = "OTPFAST.TEST"
RADIUS_SECRET = b"kerberos-e2e-secret"
RETRANSMIT_DELAY = 1.6  # seconds; the retry token type resends every 1 s

KRB_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
TOOLS = ["krb5kdc", "kdb5_util", "kadmin.local", "kinit", "klist", "kvno"]


def _have_kdc():
    plugin = glob.glob("/usr/lib/*/krb5/plugins/preauth/otp.so") + glob.glob("/usr/lib*/krb5/plugins/preauth/otp.so")
    return all(shutil.which(t, path=KRB_PATH) for t in TOOLS) and bool(plugin)


def free_port():
    """A port free for both TCP and UDP on 127.0.0.1 (the KDC binds both)."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


class LoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def krb5_config(*args):
    from otpfast_cli.main import cli
    result = CliRunner().invoke(cli, ["krb5", "config", "--realm", REALM, *args])
    assert result.exit_code == 0, result.output
    return result.output


def otp_entries(stanza):
    """The lines inside ``[otp]`` of one ``otpfast krb5 config --only kdc.conf`` output."""
    lines = stanza.splitlines()
    return lines[lines.index("[otp]") + 1:]


@pytest.fixture(scope="module")
def otpfast_services(tmp_path_factory):
    d = tmp_path_factory.mktemp("otpfast-data")
    data_dir = DataDir(str(d / "data"))
    data_dir.init(rsa_bits=2048)
    admin = data_dir.admin()
    credentials = {}
    for account, lockout in (("alice", 10), ("bob", 10), ("carol", 2), ("dave", 10)):
        # hash-chain OTPs are issued by the server (valid once, until their TTL)
        admin.add_account(account, "hashchain", lockout=lockout, chain_length=50)
        credentials[account] = admin.add_client(f"{account}-device", account=account)
    # an authenticator-app account: the user computes HOTP codes from the enrolled key
    admin.add_account("erin", "hotp")
    # a user with a PIN (issue 10): kinit takes PIN followed by the OTP
    admin.add_account("pat", "hotp")
    from otpfast.services.usertokens import TokenAdmin
    TokenAdmin(admin.store).set_pin("pat", "5150")
    distribution = data_dir.distribution()

    def request_otp(account):
        client = distribution.login(f"{account}-device", credentials[account].encode())
        issued = distribution.request(client, account)
        return masking.unmask(client.session_key, account, issued.nonce, issued.masked, issued.expires_at_ms)

    yield {"data_dir": data_dir, "admin": admin, "request_otp": request_otp}


@pytest.fixture(scope="module")
def front_end(otpfast_services, tmp_path_factory):
    from otpfast.net.verifier import AsyncVerifier
    from otpfast_cli.radius_options import build_radius_config

    sock_dir = tempfile.mkdtemp(prefix="otpk-", dir="/tmp")  # AF_UNIX paths <= 107 bytes
    secret_file = tmp_path_factory.mktemp("radius-secret") / "radius.secret"
    secret_file.write_bytes(RADIUS_SECRET + b"\n")
    loop_thread = LoopThread()
    verifier = AsyncVerifier(otpfast_services["data_dir"].distribution(), loop=loop_thread.loop)
    calls = []

    async def verify(account, otp, source):
        calls.append(account)
        if account == "dave":  # slow enough for krad to retransmit (per-try timeout 1 s)
            await asyncio.sleep(RETRANSMIT_DELAY)
        return await verifier.verify(account, otp, source=source)

    config = build_radius_config(radius_udp="127.0.0.1:0", radius_secret_file=str(secret_file),
                                 radius_legacy_no_message_authenticator=True,
                                 radius_socket=os.path.join(sock_dir, "radius.sock"))
    fe = loop_thread.run(start_radius(config, verify))
    # the default: the same secret for loopback, no opt-out (what krb5 1.20 over UDP meets
    # if the operator leaves the opt-out out)
    strict = loop_thread.run(start_radius(
        build_radius_config(radius_udp="127.0.0.1:0", radius_secret_file=str(secret_file)), verify))
    try:
        yield {"front_end": fe, "calls": calls, "secret_file": secret_file, "strict": strict}
    finally:
        loop_thread.run(_close(strict))
        loop_thread.run(_close(fe))
        verifier.close()
        loop_thread.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


async def _close(fe):
    fe.close()
    await fe.wait_closed()


@pytest.fixture(scope="module")
def realm(tmp_path_factory, front_end, require_service):
    require_service(_have_kdc(), "MIT Kerberos KDC (krb5-kdc krb5-admin-server krb5-otp krb5-user)")
    d = tmp_path_factory.mktemp("realm")
    fe = front_end["front_end"]
    kdc_port = free_port()
    secret_file = front_end["secret_file"]
    host, port = fe.udp_address
    udp = ["--radius", f"{host}:{port}", "--radius-secret-file", str(secret_file)]
    udp_stanza = krb5_config(*udp, "--token-type", "otpfast_udp", "--timeout", "3",
                             "--indicator", "otpfast", "--only", "kdc.conf")
    unix_stanza = krb5_config("--radius-socket", fe.socket_path, "--token-type", "otpfast_unix",
                              "--timeout", "3", "--only", "kdc.conf")
    retry_stanza = krb5_config(*udp, "--token-type", "otpfast_retry", "--timeout", "4", "--only", "kdc.conf")
    assert "retries = 3" in retry_stanza
    strict_host, strict_port = front_end["strict"].udp_address
    strict = ["--radius", f"{strict_host}:{strict_port}", "--radius-secret-file", str(secret_file)]
    strict_stanza = krb5_config(*strict, "--token-type", "otpfast_strict", "--timeout", "1", "--only", "kdc.conf")
    kadmin = "".join([
        krb5_config(*udp, "--token-type", "otpfast_udp", "--only", "kadmin",
                    "--principal", "alice", "--account", "alice",
                    "--principal", "carol", "--account", "carol",
                    "--principal", "erin", "--account", "erin",
                    "--principal", "pat", "--account", "pat",
                    "--principal", "quoted", "--account", 'q "x" y'),
        krb5_config("--radius-socket", fe.socket_path, "--token-type", "otpfast_unix", "--only", "kadmin",
                    "--principal", "robert", "--account", "bob"),
        krb5_config(*udp, "--token-type", "otpfast_retry", "--only", "kadmin",
                    "--principal", "dave", "--account", "dave"),
        krb5_config(*strict, "--token-type", "otpfast_strict", "--only", "kadmin",
                    "--principal", "frank", "--account", "alice"),
    ])
    otp_section = "\n".join(["[otp]", *otp_entries(udp_stanza), *otp_entries(unix_stanza),
                             *otp_entries(retry_stanza), *otp_entries(strict_stanza)])
    (d / "krb5.conf").write_text(f"""\
[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    dns_canonicalize_hostname = false
    udp_preference_limit = 1
[realms]
    {REALM} = {{
        kdc = 127.0.0.1:{kdc_port}
    }}
""")
    (d / "kdc.conf").write_text(f"""\
[kdcdefaults]
    kdc_listen = 127.0.0.1:{kdc_port}
    kdc_tcp_listen = 127.0.0.1:{kdc_port}
[realms]
    {REALM} = {{
        database_name = {d}/principal
        key_stash_file = {d}/stash
        acl_file = {d}/kadm5.acl
    }}
[logging]
    kdc = FILE:{d}/kdc.log
    admin_server = FILE:{d}/kadmin.log
    default = FILE:{d}/krb5lib.log
{otp_section}
""")
    env = {
        "PATH": KRB_PATH,
        "KRB5_CONFIG": str(d / "krb5.conf"),
        "KRB5_KDC_PROFILE": str(d / "kdc.conf"),
        "KRB5CCNAME": f"FILE:{d}/default.ccache",
    }

    def run(*args, **kw):
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, **kw)

    r = run("kdb5_util", "create", "-s", "-r", REALM, "-P", "master-pw-for-tests")
    assert r.returncode == 0, r.stderr
    script = "\n".join([
        "addprinc -randkey armor/otpfast.test",
        f"ktadd -k {d}/armor.keytab armor/otpfast.test",
        "addprinc -randkey svc/otp-only.otpfast.test",
        "setstr svc/otp-only.otpfast.test require_auth otpfast",
    ]) + "\n" + kadmin + "getstrs alice\ngetstrs robert\ngetstrs quoted\n"
    r = run("kadmin.local", input=script)
    # kadmin.local exits 0 even when a command fails: check what was stored
    assert 'otp: [{"type":"otpfast_udp","username":"alice"}]' in r.stdout, r.stdout + r.stderr
    assert 'otp: [{"type":"otpfast_unix","username":"bob"}]' in r.stdout
    assert 'otp: [{"type":"otpfast_udp","username":"q \\"x\\" y"}]' in r.stdout

    kdc_log = open(d / "krb5kdc.out", "wb")
    kdc = subprocess.Popen(["krb5kdc", "-n", "-r", REALM], env=env, stdout=kdc_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert kdc.poll() is None, (d / "kdc.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", kdc_port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "krb5kdc did not start"
                time.sleep(0.05)
        kdc_text = (d / "kdc.log").read_text()
        assert "preauth otp failed to initialize" not in kdc_text, kdc_text
        armor = f"FILE:{d}/armor.ccache"
        r = run("kinit", "-k", "-t", f"{d}/armor.keytab", "-c", armor, "armor/otpfast.test")
        assert r.returncode == 0, r.stderr

        def kinit_otp(principal, otp):
            cc = f"FILE:{d}/{principal}.ccache"
            res = run("kinit", "-T", armor, "-c", cc, principal, input=otp + "\n")
            return res, cc

        yield {"dir": d, "run": run, "kinit_otp": kinit_otp, "armor": armor}
    finally:
        kdc.terminate()
        try:
            kdc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            kdc.kill()
            kdc.wait()
        kdc_log.close()


def wrong_otp(otp):
    """Same format, another value."""
    return otp[:-1] + ("1" if otp[-1] == "0" else "0")


@pytest.mark.service
def test_kinit_udp_accepts_otp_requested_from_otpfast(realm, otpfast_services):
    otp = otpfast_services["request_otp"]("alice")
    r, cc = realm["kinit_otp"]("alice", otp)
    assert r.returncode == 0, r.stderr
    k = realm["run"]("klist", "-c", cc)
    assert f"Default principal: alice@{REALM}" in k.stdout
    assert f"krbtgt/{REALM}@{REALM}" in k.stdout
    # the indicator lets a service insist on otpfast logins
    ok = realm["run"]("kvno", "-c", cc, "svc/otp-only.otpfast.test")
    assert ok.returncode == 0, ok.stderr
    denied = realm["run"]("kvno", "-c", realm["armor"], "svc/otp-only.otpfast.test")
    assert denied.returncode != 0
    # a replay of the same OTP is refused
    r, _ = realm["kinit_otp"]("alice", otp)
    assert r.returncode != 0
    assert "Preauthentication failed" in r.stderr


@pytest.mark.service
def test_kinit_with_authenticator_app_hotp_code(realm, otpfast_services):
    record = otpfast_services["admin"].account("erin")
    app = pyotp.HOTP(base64.b32encode(bytes.fromhex(record.material["key"])).decode())
    r, _ = realm["kinit_otp"]("erin", app.at(record.counter))
    assert r.returncode == 0, r.stderr
    r, _ = realm["kinit_otp"]("erin", app.at(record.counter))
    assert r.returncode != 0 and "Preauthentication failed" in r.stderr  # replay
    r, _ = realm["kinit_otp"]("erin", app.at(record.counter + 2))  # within the look-ahead window
    assert r.returncode == 0, r.stderr


@pytest.mark.service
def test_kinit_udp_wrong_otp_refused(realm, otpfast_services):
    otp = otpfast_services["request_otp"]("alice")
    r, _ = realm["kinit_otp"]("alice", wrong_otp(otp))
    assert r.returncode != 0
    assert "Preauthentication failed" in r.stderr
    r, _ = realm["kinit_otp"]("alice", otp)  # the right one still works once
    assert r.returncode == 0, r.stderr


@pytest.mark.service
def test_kinit_unix_socket_with_username_mapping(realm, otpfast_services, front_end):
    otp = otpfast_services["request_otp"]("bob")
    r, cc = realm["kinit_otp"]("robert", otp)
    assert r.returncode == 0, r.stderr
    assert f"Default principal: robert@{REALM}" in realm["run"]("klist", "-c", cc).stdout
    r, _ = realm["kinit_otp"]("robert", otp)
    assert r.returncode != 0 and "Preauthentication failed" in r.stderr
    r, _ = realm["kinit_otp"]("robert", wrong_otp(otpfast_services["request_otp"]("bob")))
    assert r.returncode != 0 and "Preauthentication failed" in r.stderr
    assert front_end["front_end"].counters["connections"] >= 1


@pytest.mark.service
def test_kinit_locked_account_refused_until_unlocked(realm, otpfast_services):
    otp = otpfast_services["request_otp"]("carol")
    for _ in range(2):  # lockout = 2 failures: a temporary lock (minutes)
        r, _ = realm["kinit_otp"]("carol", wrong_otp(otp))
        assert r.returncode != 0
    assert otpfast_services["admin"].account("carol").locked_at(time.time())
    r, _ = realm["kinit_otp"]("carol", otp)
    assert r.returncode != 0 and "Preauthentication failed" in r.stderr
    otpfast_services["admin"].unlock("carol")
    r, _ = realm["kinit_otp"]("carol", otp)  # not spent while the account was locked
    assert r.returncode == 0, r.stderr


@pytest.mark.service
def test_kdc_retransmission_does_not_burn_the_otp(realm, otpfast_services, front_end):
    fe = front_end["front_end"]
    duplicates = fe.counters["duplicates"]
    before = front_end["calls"].count("dave")
    otp = otpfast_services["request_otp"]("dave")
    r, _ = realm["kinit_otp"]("dave", otp)
    assert r.returncode == 0, r.stderr
    assert fe.counters["duplicates"] > duplicates  # krad did resend while we verified
    assert front_end["calls"].count("dave") == before + 1  # ... and it was verified once
    assert otpfast_services["admin"].account("dave").failures == 0


@pytest.mark.service
def test_kinit_udp_without_the_opt_out_gets_no_answer(realm, otpfast_services, front_end):
    """krb5 1.20's libkrad sends no Message-Authenticator over UDP: on the default path
    otpfast drops its requests (the KDC times out), and the OTP is not spent."""
    strict = front_end["strict"]
    before = front_end["calls"].count("alice")
    otp = otpfast_services["request_otp"]("alice")
    r, _ = realm["kinit_otp"]("frank", otp)
    assert r.returncode != 0 and "Preauthentication failed" in r.stderr
    assert strict.counters["missing_message_authenticator"] >= 1
    assert strict.counters["requests"] == 0 and front_end["calls"].count("alice") == before
    r, _ = realm["kinit_otp"]("alice", otp)  # through the opted-out front end: still valid
    assert r.returncode == 0, r.stderr


@pytest.mark.service
def test_kinit_pin_plus_otp(realm, otpfast_services):
    """Issue 10: with a PIN the OTP alone (or behind a wrong PIN) gets no ticket; PIN + OTP
    typed at the kinit prompt does."""
    record = otpfast_services["admin"].account("pat")
    app = pyotp.HOTP(base64.b32encode(bytes.fromhex(record.material["key"])).decode())
    r, _ = realm["kinit_otp"]("pat", app.at(record.counter))
    assert r.returncode != 0 and "Preauthentication failed" in r.stderr
    r, _ = realm["kinit_otp"]("pat", "5151" + app.at(record.counter))
    assert r.returncode != 0 and "Preauthentication failed" in r.stderr
    r, cc = realm["kinit_otp"]("pat", "5150" + app.at(record.counter))
    assert r.returncode == 0, r.stderr
    assert f"Default principal: pat@{REALM}" in realm["run"]("klist", "-c", cc).stdout
