"""The network client commands' argument handling, and the commands against a real server
running in a thread of this process (`serve_combined` over a real data directory)."""
import asyncio
import json
import re
import threading

import pytest
from click.testing import CliRunner

from otpfast_cli import clients
from otpfast_cli.main import cli


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def cred_file(tmp_path):
    path = tmp_path / "cred"
    path.write_text("not-a-real-credential\n")
    return str(path)


def invoke(runner, *args, input=None, env=None):
    return runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


@pytest.mark.parametrize("server", ["localhost", "localhost:http", "localhost:99999", ":80", "host:٣٣"])
def test_clients_bad_server_address_names_the_option(runner, cred_file, server):
    result = invoke(runner, "request", "--server", server, "--client", "c", "--credential-file", cred_file,
                    "--account", "a")
    assert result.exit_code == 2
    assert "--server" in result.output


@pytest.mark.parametrize("pin", ["abc", "sha256:1234", "sha1:" + "0" * 40, "sha256:" + "g" * 64])
def test_clients_bad_pin_names_the_option(runner, cred_file, pin):
    result = invoke(runner, "verify", "--server", "127.0.0.1:1", "--client", "c", "--credential-file", cred_file,
                    "--account", "a", "--pin", pin, "123456")
    assert result.exit_code == 2
    assert "--pin" in result.output


def test_clients_missing_credential_is_a_usage_error(runner, monkeypatch):
    monkeypatch.delenv("OTPFAST_CREDENTIAL", raising=False)
    result = invoke(runner, "request", "--server", "127.0.0.1:1", "--client", "c", "--account", "a")
    assert result.exit_code == 2
    assert "OTPFAST_CREDENTIAL" in result.output


def test_clients_unreadable_or_empty_credential_file(runner, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path in (str(tmp_path / "missing"), str(empty)):
        result = invoke(runner, "request", "--server", "127.0.0.1:1", "--client", "c", "--credential-file", path,
                        "--account", "a")
        assert result.exit_code == 2
        assert "--credential-file" in result.output


def test_clients_read_credential_from_file_and_environment(tmp_path, monkeypatch):
    path = tmp_path / "cred"
    path.write_text("  abc-DEF_123 \n")
    assert clients.read_credential(str(path)) == b"abc-DEF_123"
    monkeypatch.setenv("OTPFAST_CREDENTIAL", "from-env\n")
    assert clients.read_credential(None) == b"from-env"


def test_clients_credential_never_accepted_on_argv(runner):
    result = invoke(runner, "request", "--credential", "x", "--server", "127.0.0.1:1", "--client", "c",
                    "--account", "a")
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_clients_unreachable_server_exits_3(runner, cred_file):
    result = invoke(runner, "verify", "--server", "127.0.0.1:1", "--client", "c", "--credential-file", cred_file,
                    "--account", "a", "--pin", "sha256:" + "0" * 64, "--timeout", "2", "123456")
    assert result.exit_code == 3
    assert "cannot talk to the server" in result.output


def test_contribute_value_from_piped_stdin(monkeypatch):
    monkeypatch.setattr(clients, "stdin_is_terminal", lambda: False)
    runner = CliRunner()
    seen = {}

    @clients.click.command()
    def probe():
        seen["value"] = clients.ask_value()
    assert runner.invoke(probe, input="0x2a\n").exit_code == 0
    assert seen["value"] == 42
    result = runner.invoke(probe, input="forty-two\n")
    assert result.exit_code == 2 and "integer" in result.output
    result = runner.invoke(probe, input="")
    assert result.exit_code == 2 and "--value" in result.output


def test_contribute_value_prompt_re_asks_on_a_terminal(monkeypatch):
    monkeypatch.setattr(clients, "stdin_is_terminal", lambda: True)
    runner = CliRunner()
    seen = {}

    @clients.click.command()
    def probe():
        seen["value"] = clients.ask_value()
    result = runner.invoke(probe, input="abc\n١٢\n12345\n")
    assert result.exit_code == 0, result.output
    assert seen["value"] == 12345
    assert result.output.count("Enter an integer") == 3


# -- against a real server in a background thread --------------------------------------------
class ThreadServer:
    def __init__(self, datadir):
        from otpfast.net import tls
        from otpfast.net._stream import bound_address
        from otpfast.net.server import serve_combined
        from otpfast.net.verifier import AsyncVerifier

        self.loop = asyncio.new_event_loop()
        self.keyserver = datadir.keyserver(iterations=1000)
        self.distribution = datadir.distribution()
        self.verifier = AsyncVerifier(self.distribution, loop=self.loop)

        async def start():
            return await serve_combined(self.keyserver, self.verifier, tls.server_context(datadir), "127.0.0.1", 0)
        self.server = self.loop.run_until_complete(start())
        self.address = "%s:%d" % bound_address(self.server)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self):
        async def stop():
            self.server.close()
            await self.server.wait_closed()
            await self.verifier.aclose()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
        self.keyserver.store.close()
        self.distribution.store.close()


@pytest.fixture
def live(tmp_path, monkeypatch):
    from otpfast.datadir import DataDir

    monkeypatch.setenv("OTPFAST_KNOWN_SERVERS", str(tmp_path / "known_servers"))
    datadir = DataDir(str(tmp_path / "data"))
    fingerprint = datadir.init(rsa_bits=2048)
    admin = datadir.admin()
    files = {}

    def save(name, credential):
        files[name] = tmp_path / f"{name}.cred"
        files[name].write_text(credential + "\n")
    save("authority", admin.add_authority(1))
    admin.add_account("alice", "rsa-prf", authorities=[1])
    save("phone", admin.add_client("phone", account="alice"))
    save("verifier", admin.add_client("verifier", verifier=True))
    admin.store.close()
    server = ThreadServer(datadir)
    yield server.address, fingerprint, files, datadir
    server.stop()


def test_clients_contribute_request_verify_against_a_live_server(runner, live):
    address, pin, files, datadir = live
    result = invoke(runner, "contribute", "--server", address, "--authority", "1", "--credential-file",
                    str(files["authority"]), "--account", "alice", "--pin", pin, "--value", "31337")
    assert result.exit_code == 0, result.output
    assert "receipt " in result.output and "signed by the key server" in result.output
    transcript = re.search(r"transcript ([0-9a-f]{64}) \(ceremony complete", result.output).group(1)
    # the authority fetches the signed transcript again (every authority can)
    result = invoke(runner, "ceremony", "transcript", "--server", address, "--authority", "1",
                    "--credential-file", str(files["authority"]), "--account", "alice", "--pin", pin)
    assert result.exit_code == 0, result.output
    assert result.output.split()[1] == transcript
    result = invoke(runner, "request", "--server", address, "--client", "phone", "--credential-file",
                    str(files["phone"]), "--account", "alice", "--pin", pin)
    assert result.exit_code == 0, result.output
    otp = result.output.strip()
    assert otp.isdigit() and len(otp) == 6
    verify = ["verify", "--server", address, "--client", "verifier", "--credential-file", str(files["verifier"]),
              "--account", "alice", "--pin", pin, otp]
    assert invoke(runner, *verify).exit_code == 0
    assert invoke(runner, *verify).exit_code == 1
    # local mode against the data directory: the replay is refused there too
    result = invoke(runner, "verify", "--data-dir", datadir.path, "--account", "alice", otp)
    assert result.exit_code == 1 and "rejected" in result.output


def test_clients_ceremony_transcript_refused_while_pending_or_wrong_credential(runner, live):
    address, pin, files, _ = live
    base = ["ceremony", "transcript", "--server", address, "--authority", "1", "--account", "alice", "--pin", pin]
    result = invoke(runner, *base, "--credential-file", str(files["authority"]))
    assert result.exit_code == 3 and "refused" in result.output       # ceremony still pending
    result = invoke(runner, *base, "--credential-file", str(files["phone"]))
    assert result.exit_code == 3 and "refused" in result.output


def test_clients_contribute_with_a_wrong_credential_is_refused(runner, live):
    address, pin, files, _ = live
    result = invoke(runner, "contribute", "--server", address, "--authority", "1", "--credential-file",
                    str(files["phone"]), "--account", "alice", "--pin", pin, "--value", "1")
    assert result.exit_code == 3 and "refused" in result.output


def test_client_add_prints_the_server_pin(live):
    _, pin, _, datadir = live
    result = CliRunner().invoke(cli, ["client", "add", "--data-dir", datadir.path, "tablet", "--account", "alice"])
    assert result.exit_code == 0, result.output
    credential = result.stdout.strip()
    assert len(credential) == 43 and "\n" not in credential       # stdout: the credential alone
    assert f"--pin {pin}" in result.stderr


def test_clients_request_with_a_verifier_credential_is_refused(runner, live):
    address, pin, files, _ = live
    result = invoke(runner, "request", "--server", address, "--client", "phone", "--credential-file",
                    str(files["verifier"]), "--account", "alice", "--pin", pin)
    assert result.exit_code == 3
    assert "refused" in result.output


def test_clients_trust_on_first_use_notes_it(runner, live, tmp_path):
    address, pin, files, _ = live
    args = ["verify", "--server", address, "--client", "verifier", "--credential-file", str(files["verifier"]),
            "--account", "alice", "000000"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 1  # no OTP issued: rejected, but the server was trusted
    assert "trusting" in first.output
    assert (tmp_path / "known_servers").read_text().split() == [address, pin]
    second = runner.invoke(cli, args)
    assert "trusting" not in second.output


@pytest.mark.parametrize("scheme", ["rsa-prf", "hotp", "hashchain"])
def test_demo_every_step_behaves(runner, scheme):
    result = invoke(runner, "demo", "--scheme", scheme)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1] == "demo ok: every step behaved"
    steps = lines[:-1]
    assert len(steps) == 13
    assert all(re.search(r" ok(  |$)", line) and "FAILED" not in line for line in steps), steps
    for needle in ("authority 4 contributes a sha512", "authority 3 contributes a sha384",
                   "replay): refused", "wrong OTP: refused", "verifies it: accepted"):
        assert any(needle in line for line in steps), needle


@pytest.mark.parametrize("option", ["--account", "--client"])
def test_clients_names_must_fit_the_protocol(runner, cred_file, option):
    args = {"--server": "127.0.0.1:1", "--client": "c", "--credential-file": cred_file, "--account": "a"}
    for bad in ("x" * 129, "tab\there", "é" * 65):
        args[option] = bad
        result = invoke(runner, "request", *[item for pair in args.items() for item in pair])
        assert result.exit_code == 2
        assert option in result.output


def test_clients_local_verify_refuses_network_options(runner, cred_file, tmp_path):
    result = invoke(runner, "verify", "--data-dir", str(tmp_path), "--account", "a", "--credential-file", cred_file,
                    "123456")
    assert result.exit_code == 2 and "--credential-file" in result.output


def test_clients_unsendable_otp_is_rejected_without_asking(runner, live):
    address, pin, files, _ = live
    for otp in ("1" * 300, "12\x0034"):
        result = invoke(runner, "verify", "--server", address, "--client", "verifier", "--credential-file",
                        str(files["verifier"]), "--account", "alice", "--pin", pin, "--", otp)
        assert result.exit_code == 1 and "rejected" in result.output


def test_clients_local_verify_without_a_data_directory_exits_2(runner, tmp_path):
    """A usage error (not a rejection, 1, nor an outage, 3): names the option and the fix."""
    result = invoke(runner, "verify", "--data-dir", str(tmp_path / "none"), "--account", "a", "123456")
    assert result.exit_code == 2
    assert "'--data-dir'" in result.output and "otpfast init" in result.output


# -- the admin's everyday tools against the live server (issue 10 item 6) ---------------------
def test_clients_rotated_credential_stops_working_over_the_network(runner, live, tmp_path):
    address, pin, files, datadir = live
    invoke(runner, "contribute", "--server", address, "--authority", "1", "--credential-file",
           str(files["authority"]), "--account", "alice", "--pin", pin, "--value", "7")
    request = ["request", "--server", address, "--client", "phone", "--account", "alice", "--pin", pin]
    assert invoke(runner, *request, "--credential-file", str(files["phone"])).exit_code == 0
    rotated = CliRunner().invoke(cli, ["client", "rotate", "--data-dir", datadir.path, "phone"])
    assert rotated.exit_code == 0, rotated.output
    assert f"--pin {pin}" in rotated.stderr
    new = tmp_path / "phone-new.cred"
    new.write_text(rotated.stdout)
    result = invoke(runner, *request, "--credential-file", str(files["phone"]))
    assert result.exit_code == 3 and "refused" in result.output
    result = invoke(runner, *request, "--credential-file", str(new))
    assert result.exit_code == 0 and result.output.strip().isdigit()
    otp = result.output.strip()
    verify = ["verify", "--server", address, "--client", "verifier", "--credential-file",
              str(files["verifier"]), "--account", "alice", "--pin", pin, "--json", otp]
    result = invoke(runner, *verify)
    assert result.exit_code == 0 and json.loads(result.output) == {
        "account": "alice", "accepted": True, "result": "accepted"}
    result = invoke(runner, *verify)
    assert result.exit_code == 1 and json.loads(result.output)["accepted"] is False


def test_clients_ceremony_with_authorities_6_and_7(runner, live, tmp_path):
    """`authority add 6` then `contribute --authority 6` works (the 1..4 limit is gone)."""
    address, pin, _, datadir = live
    admin = ["--data-dir", datadir.path]
    creds = {}
    for i in ("6", "7"):
        result = CliRunner().invoke(cli, ["authority", "add", *admin, i])
        assert result.exit_code == 0, result.output
        creds[i] = tmp_path / f"authority{i}.cred"
        creds[i].write_text(result.stdout)
    result = CliRunner().invoke(cli, ["account", "add", *admin, "carol", "--type", "hotp",
                                      "--authorities", "6,7"])
    assert result.exit_code == 0 and "waits for the key ceremony" in result.output
    for i in ("6", "7"):
        result = invoke(runner, "contribute", "--server", address, "--authority", i,
                        "--credential-file", str(creds[i]), "--account", "carol", "--pin", pin,
                        "--value", "4242")
        assert result.exit_code == 0, result.output
        assert f"as authority {i} (sha512)" in result.output
    assert "ceremony complete" in result.output
    show = CliRunner().invoke(cli, ["account", "show", *admin, "carol", "--json"])
    assert json.loads(show.stdout)["state"] == "active"
    audit = CliRunner().invoke(cli, ["audit", "list", *admin, "--account", "carol", "--json",
                                     "--result", "accepted"])
    entries = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [(e["event"], e["client"], e["source"]) for e in entries] == [
        ("contribute", "authority:6", "127.0.0.1"), ("contribute", "authority:7", "127.0.0.1"),
        ("ceremony-complete", "authority:7", "127.0.0.1")]
