"""Issue 10: PIN + OTP through RADIUS (what Kerberos' otp preauth sends as User-Password).
A real `otpfast serve --require-pin --radius ...` process and radclient: the user with a PIN
is accepted with PIN + OTP in User-Password, refused with the OTP alone or a wrong PIN; a
user without a PIN is refused under --require-pin."""
import shutil
import subprocess
import sys

import pytest

from otpfast.datadir import DataDir
from otpfast.hotp import HOTP
from otpfast.services.usertokens import TokenAdmin

from .test_serve import MA
from ..conftest import free_udp_port, stop_process

SECRET = "pin-radius-secret-16+"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("pin-radius")
    data_dir = DataDir(str(base / "data"))
    data_dir.init(rsa_bits=2048)
    admin = data_dir.admin()
    admin.add_account("alice", "hotp")
    admin.add_account("bob", "hotp")
    TokenAdmin(admin.store).set_pin("alice", "7391")
    keys = {name: HOTP(bytes.fromhex(admin.store.account(name).material["key"]))
            for name in ("alice", "bob")}
    admin.store.close()
    clients_file = base / "radius.clients"
    clients_file.write_text(f"127.0.0.1 {SECRET}\n")
    port = free_udp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpfast_cli", "serve", "--listen", "127.0.0.1:0", "--data-dir",
         data_dir.path, "--radius", f"127.0.0.1:{port}", "--radius-clients", str(clients_file),
         "--require-pin"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening "), line
        yield {"address": ("127.0.0.1", port), "devices": keys}
    finally:
        stop_process(proc)
        proc.stdout.close()


@pytest.fixture
def radclient(require_service):
    path = shutil.which("radclient")
    require_service(path is not None, "radclient (freeradius-utils)")

    def run(address, user, password):
        attributes = f'User-Name = "{user}", User-Password = "{password}"{MA}'
        out = subprocess.run([path, "-x", "-r", "1", "-t", "2", f"{address[0]}:{address[1]}",
                              "auth", SECRET], input=attributes + "\n", capture_output=True,
                             text=True, timeout=20)
        return "Received Access-Accept" in out.stdout + out.stderr

    return run


@pytest.mark.service
def test_radius_pin_plus_otp_accepted_otp_alone_refused(served, radclient):
    alice, bob = served["devices"]["alice"], served["devices"]["bob"]
    address = served["address"]
    assert not radclient(address, "alice", alice.generate(0))             # OTP alone
    assert not radclient(address, "alice", "7390" + alice.generate(0))    # wrong PIN
    assert radclient(address, "alice", "7391" + alice.generate(0))        # PIN + OTP
    assert not radclient(address, "alice", "7391" + alice.generate(0))    # replay
    assert not radclient(address, "bob", bob.generate(0))                 # --require-pin
