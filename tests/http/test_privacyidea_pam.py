"""A third-party client of the privacyIDEA API against `otpfast serve --http`: privacyIDEA's
own PAM module (privacyidea_pam.py from privacyIDEA 2.23.5 on PyPI, run by Debian's
pam_python through pamtester), verifying otpfast's certificate against a test CA as a
production setup would (no ``nosslverify``).

tools/install-system-deps.sh installs the module under /usr/local/lib/privacyidea/authmodules.
The PAM service file has to live in /etc/pam.d: the test needs root (CI runs as root)."""
import datetime
import ipaddress
import os
import shutil
import subprocess
import sys
import uuid

import pyotp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from otpfast.datadir import DataDir
from otpfast.services.usertokens import TokenAdmin
from ..conftest import stop_process

PI_PAM = os.environ.get("OTPFAST_PRIVACYIDEA_PAM",
                        "/usr/local/lib/privacyidea/authmodules/pam_python/privacyidea_pam.py")
PAM_PYTHON = "/lib/security/pam_python.so"                       # Debian's libpam-python
KEY = bytes.fromhex("3132333435363738393031323334353637383930")     # RFC 4226's
PIN = "pin é 24"
# as sshd or login run it: pam_python's embedded Python finds its prefix through PATH, so a
# python3 of another installation first on PATH (pyenv, a virtualenv) would break it
SYSTEM_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}                                                     # a space, non-ASCII


def _available():
    return (shutil.which("pamtester") is not None and os.path.exists(PAM_PYTHON)
            and os.path.exists(PI_PAM) and os.geteuid() == 0)


def _certificate(subject, key, issuer_name, issuer_key, ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(directory, name):
    """(CA certificate path, issue(name) -> (cert path, key path))."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_cert = _certificate(name, ca_key, ca_name, ca_key, ca=True)
    ca_path = directory / f"{name}.pem"
    ca_path.write_bytes(_pem(ca_cert))

    def issue(subject):
        key = ec.generate_private_key(ec.SECP256R1())
        cert_path, key_path = directory / f"{subject}.crt", directory / f"{subject}.key"
        cert_path.write_bytes(_pem(_certificate(subject, key, ca_name, ca_key, ca=False)))
        key_path.write_bytes(_pem(key))
        key_path.chmod(0o600)
        return str(cert_path), str(key_path)
    return str(ca_path), issue


@pytest.fixture
def privacyidea_pam(tmp_path, require_service):
    """``login(user, password, cacerts=...) -> pamtester's exit code`` through privacyIDEA's
    PAM module against a live `serve --http` with a CA-signed certificate."""
    require_service(_available(), "pamtester, pam_python, privacyIDEA's PAM module "
                                  "(tools/install-system-deps.sh) and root (to write /etc/pam.d)")
    ca, issue = make_ca(tmp_path, "test-ca")
    other_ca, _ = make_ca(tmp_path, "other-ca")
    cert, key = issue("otpfast-server")
    data = DataDir(str(tmp_path / "data"))
    data.init(tls_cert=cert, tls_key=key, rsa_bits=2048)
    admin = data.admin()
    admin.add_account("pamuser", "hotp", secret=KEY)
    TokenAdmin(admin.store, clock=admin.clock).set_pin("pamuser", PIN)
    admin.store.close()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpfast", "serve", "--data-dir", data.path, "--listen", "127.0.0.1:0",
         "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    services = []

    def login(user, password, cacerts=ca):
        service = f"otpfast-pi-{uuid.uuid4().hex[:8]}"
        path = f"/etc/pam.d/{service}"
        services.append(path)
        with open(path, "w") as fh:
            fh.write(f"auth required {PAM_PYTHON} {PI_PAM} url={url} cacerts={cacerts} "
                     f"sqlfile={tmp_path / 'pam.sqlite'}\n")
        return subprocess.run(["pamtester", service, user, "authenticate"], input=password + "\n",
                              capture_output=True, text=True, timeout=30, env=SYSTEM_ENV).returncode

    try:
        lines = [proc.stdout.readline() for _ in range(3)]          # listening, fingerprint, http
        url = "https://" + next(line.split()[1] for line in lines if line.startswith("http "))
        login.other_ca = other_ca
        yield login
    finally:
        for path in services:
            if os.path.exists(path):
                os.remove(path)
        stop_process(proc)
        proc.stdout.close()
        log.close()


@pytest.mark.service
def test_privacyidea_pam_module_logs_in_once_with_pin_and_otp(privacyidea_pam):
    hotp = pyotp.HOTP("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")        # base32 of KEY
    login = privacyidea_pam
    assert login("pamuser", hotp.at(0)) != 0                      # the OTP alone
    assert login("pamuser", "pin e 24" + hotp.at(0)) != 0         # wrong PIN
    assert login("nobody", PIN + hotp.at(0)) != 0                 # unknown user (904)
    # a server certificate the module cannot verify: refused before the OTP is sent
    assert login("pamuser", PIN + hotp.at(0), cacerts=login.other_ca) != 0
    assert login("pamuser", PIN + hotp.at(0)) == 0                # accepted
    assert login("pamuser", PIN + hotp.at(0)) != 0                # replay
    assert login("pamuser", PIN + hotp.at(1)) == 0                # the next one
