"""A second third-party client of the privacyIDEA API against `otpfast serve --http`:
privacyIDEA's FreeRADIUS plugin (privacyidea_radius.pm from privacyIDEA 2.23.5 on PyPI) run
by Debian's FreeRADIUS 3 under rlm_perl, as privacyIDEA's own docs set it up: a RADIUS client
(pyrad) -> FreeRADIUS -> the plugin -> HTTPS /validate/check -> otpfast. The plugin checks
otpfast's certificate (SSL_CHECK = true, the test CA through LWP's PERL_LWP_SSL_CA_FILE).

The plugin reads /etc/privacyidea/rlm_perl.ini (a fixed path): the test writes it and puts
back whatever was there; it needs root (CI runs as root). tools/install-system-deps.sh
installs FreeRADIUS, the Perl libraries and the plugin."""
import os
import shutil
import socket
import subprocess
import sys
import time

import pyotp
import pytest
from pyrad import packet as pyrad_packet

from otpfast.datadir import DataDir
from otpfast.radius.codec import load_dictionary
from otpfast.services.usertokens import TokenAdmin
from ..conftest import free_udp_port, stop_process
from ..radius.conftest import RadiusClient
from .test_privacyidea_pam import KEY, make_ca

PLUGIN = os.environ.get("OTPFAST_PRIVACYIDEA_RADIUS",
                        "/usr/local/lib/privacyidea/authmodules/FreeRADIUS/privacyidea_radius.pm")
FREERADIUS = "/usr/sbin/freeradius"
RLM_PERL = "/usr/lib/freeradius/rlm_perl.so"
INI = "/etc/privacyidea/rlm_perl.ini"
PERL_MODULES = ("Config::IniFiles", "LWP::Protocol::https", "JSON", "Try::Tiny", "Data::Dump")
SECRET = "freeradius-test-secret-0123456789"
PIN = "4711"
HOTP = pyotp.HOTP("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")       # base32 of KEY

RADIUSD_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {dir}
raddbdir = {dir}
radacctdir = {dir}
name = freeradius
confdir = {dir}
modconfdir = {dir}
run_dir = {dir}
db_dir = {dir}
libdir = /usr/lib/freeradius
pidfile = {dir}/freeradius.pid
max_request_time = 30
cleanup_delay = 0
max_requests = 1024
hostname_lookups = no
log {{
  destination = stdout
  colourise = no
}}
security {{
  allow_core_dumps = no
  max_attributes = 200
  reject_delay = 0
  status_server = no
  allow_vulnerable_openssl = yes
}}
client localhost {{
  ipaddr = 127.0.0.1
  secret = {secret}
}}
modules {{
  perl {{
    filename = {plugin}
  }}
}}
server default {{
  listen {{
    type = auth
    ipaddr = 127.0.0.1
    port = {port}
  }}
  authorize {{
    update control {{
      &Auth-Type := Perl
    }}
  }}
  authenticate {{
    Auth-Type Perl {{
      perl
    }}
  }}
}}
"""


def _available():
    if not (os.path.exists(FREERADIUS) and os.path.exists(RLM_PERL) and os.path.exists(PLUGIN)
            and os.geteuid() == 0):
        return False
    args = ["perl"] + [f"-M{module}" for module in PERL_MODULES] + ["-e", "1"]
    return subprocess.run(args, capture_output=True).returncode == 0


@pytest.fixture
def freeradius(tmp_path, require_service):
    """``start(ca_file) -> login(user, password) -> (accepted?, Reply-Message)``: FreeRADIUS
    with privacyIDEA's plugin in front of a live `serve --http` with a CA-signed certificate."""
    require_service(_available(), "FreeRADIUS with rlm_perl, its Perl libraries, privacyIDEA's "
                                  "FreeRADIUS plugin (tools/install-system-deps.sh) and root")
    ca, issue = make_ca(tmp_path, "test-ca")
    other_ca, _ = make_ca(tmp_path, "other-ca")
    cert, key = issue("otpfast-server")
    data = DataDir(str(tmp_path / "data"))
    data.init(tls_cert=cert, tls_key=key, rsa_bits=2048)
    admin = data.admin()
    admin.add_account("bob", "hotp", secret=KEY)
    TokenAdmin(admin.store, clock=admin.clock).set_pin("bob", PIN)
    admin.store.close()
    otpfast = subprocess.Popen(
        [sys.executable, "-m", "otpfast", "serve", "--data-dir", data.path, "--listen", "127.0.0.1:0",
         "--http", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    saved, made_dir = None, not os.path.isdir(os.path.dirname(INI))
    if os.path.exists(INI):
        with open(INI, "rb") as fh:
            saved = fh.read()
    running = []

    def start(ca_file):
        for proc, log in running:             # one FreeRADIUS at a time
            stop_process(proc)
            log.close()
        running.clear()
        conf_dir = tmp_path / f"raddb-{len(os.listdir(tmp_path))}"
        conf_dir.mkdir()
        port = free_udp_port()
        (conf_dir / "dictionary").write_text("$INCLUDE /usr/share/freeradius/dictionary\n")
        (conf_dir / "radiusd.conf").write_text(RADIUSD_CONF.format(dir=conf_dir, secret=SECRET, plugin=PLUGIN,
                                                                   port=port))
        log_path = conf_dir / "radiusd.log"
        log = open(log_path, "w")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PERL_LWP_SSL_CA_FILE": ca_file}
        proc = subprocess.Popen([FREERADIUS, "-X", "-d", str(conf_dir), "-n", "radiusd"], stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        running.append((proc, log))
        deadline = time.monotonic() + 30
        while "Ready to process requests" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.1)
        radius = RadiusClient(load_dictionary(), secret=SECRET.encode())

        def login(user, password):
            # Debian 12's FreeRADIUS 3.2.1 signs no reply with a Message-Authenticator, so the
            # request carries none either (the reply check wants them to match)
            pkt, raw = radius.request(user, password, message_authenticator=False)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(20)
                sock.sendto(raw, ("127.0.0.1", port))
                reply = sock.recv(4096)
            code = radius.check_reply(pkt, reply)
            message = pyrad_packet.AuthPacket(packet=reply, secret=SECRET.encode(),
                                              dict=radius.rdict).get("Reply-Message", [""])[0]
            return code == pyrad_packet.AccessAccept, message
        return login

    try:
        lines = [otpfast.stdout.readline() for _ in range(3)]
        url = "https://" + next(line.split()[1] for line in lines if line.startswith("http "))
        os.makedirs(os.path.dirname(INI), exist_ok=True)
        with open(INI, "w") as fh:
            fh.write(f"[Default]\nURL = {url}/validate/check\nSSL_CHECK = true\nTIMEOUT = 10\n")
        start.ca, start.other_ca = ca, other_ca
        yield start
    finally:
        for proc, log in running:
            stop_process(proc)
            log.close()
        if saved is None:
            if os.path.exists(INI):
                os.remove(INI)
            if made_dir and not os.listdir(os.path.dirname(INI)):
                os.rmdir(os.path.dirname(INI))
        else:
            with open(INI, "wb") as fh:
                fh.write(saved)
        stop_process(otpfast)
        otpfast.stdout.close()


@pytest.mark.service
def test_privacyidea_freeradius_plugin_logs_in_once_with_pin_and_otp(freeradius):
    # a server certificate the plugin cannot verify: refused before the OTP is sent
    login = freeradius(freeradius.other_ca)
    accepted, message = login("bob", PIN + HOTP.at(0))
    assert not accepted and "certificate verify failed" in message
    login = freeradius(freeradius.ca)
    assert login("bob", HOTP.at(0))[0] is False                       # the OTP alone
    assert login("bob", "4712" + HOTP.at(0)) == (False, "wrong otp pin")   # wrong PIN: generic
    assert login("nobody", PIN + HOTP.at(0))[0] is False              # unknown user (904)
    assert login("bob", PIN + HOTP.at(0))[0] is True                  # accepted
    assert login("bob", PIN + HOTP.at(0)) == (False, "wrong otp pin")  # replay
    assert login("bob", PIN + HOTP.at(1))[0] is True                  # the next one
