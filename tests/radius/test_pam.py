"""A real PAM stack against otpfast: Debian's pam_radius_auth (through pamtester) over UDP.

pam_radius_auth 2.0 (Debian 12) sends no Message-Authenticator, so its client is opted out
in the clients list (`no-message-authenticator`), as the README's PAM/Kerberos section says.
The PAM service file has to live in /etc/pam.d: the test needs root (CI runs as root)."""
import os
import shutil
import subprocess
import sys
import uuid

import pyotp
import pytest

from otpfast.datadir import DataDir
from otpfast.services.usertokens import TokenAdmin
from ..conftest import stop_process

SECRET = "pam-radius-secret-0123456789"
KEY = bytes.fromhex("3132333435363738393031323334353637383930")     # RFC 4226's
PAM_MODULE = "/lib/x86_64-linux-gnu/security/pam_radius_auth.so"


def _available():
    return (shutil.which("pamtester") is not None and os.path.exists(PAM_MODULE)
            and os.geteuid() == 0)


@pytest.fixture
def pam_service(tmp_path, require_service):
    require_service(_available(), "pamtester, pam_radius_auth and root (to write /etc/pam.d)")
    data = DataDir(str(tmp_path / "data"))
    data.init(rsa_bits=2048)
    admin = data.admin()
    admin.add_account("alice", "hotp", secret=KEY)
    admin.add_account("bob", "hotp", secret=KEY)
    TokenAdmin(admin.store, clock=admin.clock).set_pin("bob", "2468")
    admin.store.close()
    clients = tmp_path / "radius.clients"
    clients.write_text(f"127.0.0.1/32 {SECRET} no-message-authenticator\n")
    clients.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpfast", "serve", "--data-dir", data.path, "--listen", "127.0.0.1:0",
         "--radius", "127.0.0.1:0", "--radius-clients", str(clients)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    service = f"otpfast-test-{uuid.uuid4().hex[:8]}"
    pam_file = f"/etc/pam.d/{service}"
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        radius = next(line.split()[1] for line in lines if line.startswith("radius "))
        conf = tmp_path / "pam_radius_auth.conf"
        conf.write_text(f"{radius} {SECRET} 5\n")
        conf.chmod(0o600)
        with open(pam_file, "w") as fh:
            fh.write(f"auth required pam_radius_auth.so conf={conf}\n")
        yield service
    finally:
        if os.path.exists(pam_file):
            os.remove(pam_file)
        stop_process(proc)
        proc.stdout.close()


def _login(service, user, password):
    return subprocess.run(["pamtester", service, user, "authenticate"], input=password + "\n",
                          capture_output=True, text=True, timeout=30).returncode


@pytest.mark.service
def test_pam_radius_login_once(pam_service):
    hotp = pyotp.HOTP("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")        # base32 of KEY
    assert _login(pam_service, "alice", "000000") != 0            # wrong
    assert _login(pam_service, "alice", hotp.at(1)) == 0          # in the window
    assert _login(pam_service, "alice", hotp.at(1)) != 0          # replay


@pytest.mark.service
def test_pam_radius_pin_and_otp(pam_service):
    hotp = pyotp.HOTP("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
    assert _login(pam_service, "bob", hotp.at(0)) != 0            # the OTP alone: refused
    assert _login(pam_service, "bob", "1357" + hotp.at(1)) != 0   # wrong PIN
    assert _login(pam_service, "bob", "2468" + hotp.at(2)) == 0
