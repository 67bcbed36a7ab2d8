"""The admin API of `otpfast serve --http` as a real server process: every endpoint and
every error through httpx over TLS (curl for a few), the CLI and the API agreeing (created
through one, shown through the other), who may call it (an admin client's bearer only;
a verifier's is refused, audited and throttled) and the audit entries of its actions."""
import json
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast.hotp import HOTP
from otpfast_cli.main import cli
from ..conftest import stop_process

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "vectors" / "pskc"
FIGURE6_PSK = "12345678901234567890123456789012"


def run(data_dir, *args, input=None):
    result = CliRunner().invoke(cli, [*args, "--data-dir", data_dir], input=input)
    assert result.exit_code == 0, result.output
    return result.stdout


def start_server(data_dir, base):
    stderr = open(base / "stderr.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpfast_cli", "serve", "--listen", "127.0.0.1:0", "--data-dir",
         data_dir, "--http", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines = [proc.stdout.readline() for _ in range(3)]
    http = [line for line in lines if line.startswith("http ")][0].split()[1].rsplit(":", 1)
    return proc, stderr, f"https://127.0.0.1:{http[1]}"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("admin-api")
    data_dir = DataDir(str(base / "data"))
    data_dir.init(rsa_bits=2048)
    path = data_dir.path
    admin = run(path, "client", "add", "ops", "--admin").strip()        # through the CLI
    relay = run(path, "client", "add", "relay", "--verifier").strip()
    ops2 = run(path, "client", "add", "ops2", "--admin").strip()
    proc, stderr, url = start_server(path, base)
    try:
        yield {"url": url, "dir": path, "admin": f"ops:{admin}", "relay": f"relay:{relay}",
               "ops2": f"ops2:{ops2}", "stderr": stderr, "proc": proc}
    finally:
        stop_process(proc)
        proc.stdout.close()
        stderr.close()


@pytest.fixture
def api(served):
    with httpx.Client(base_url=served["url"], verify=False, timeout=20,
                      headers={"Authorization": f"Bearer {served['admin']}"}) as client:
        yield client


def cli_json(served, *args):
    return json.loads(run(served["dir"], *args, "--json"))


def audit_rows(api, **params):
    return api.get("/admin/audit", params={"limit": 1000, **params}).json()["entries"]


def wait_for_audit(api, predicate, **params):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in audit_rows(api, **params) if predicate(e)]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("no such audit entry")


def test_admin_client_role_in_client_list(served):
    rows = [json.loads(line) for line in run(served["dir"], "client", "list", "--json").splitlines()]
    assert {row["name"]: row["role"] for row in rows} == {"ops": "admin", "ops2": "admin",
                                                          "relay": "verifier"}


def test_admin_user_created_by_api_shown_by_cli_and_back(served, api):
    response = api.post("/admin/users", json={"name": "ann", "type": "hotp", "digits": 8,
                                              "issuer": "Example"})
    assert response.status_code == 201
    body = response.json()
    assert body["uri"].startswith("otpauth://hotp/") and "issuer=Example" in body["uri"]
    assert body["user"] == cli_json(served, "account", "show", "ann")
    # the URI is what `otpfast enroll` prints for the same user
    assert run(served["dir"], "enroll", "ann", "--issuer", "Example").splitlines()[0] == body["uri"]
    run(served["dir"], "account", "add", "cli-user", "--type", "totp")
    shown = api.get("/admin/users/cli-user")
    assert shown.status_code == 200 and shown.json()["user"] == cli_json(served, "account", "show", "cli-user")
    listed = api.get("/admin/users").json()["users"]
    assert {"ann", "cli-user"} <= {user["name"] for user in listed}
    assert api.post("/admin/users", json={"name": "ann", "type": "hotp"}).status_code == 409
    hashchain = api.post("/admin/users", json={"name": "hc", "type": "hashchain", "chain_length": 5})
    assert hashchain.status_code == 201 and "uri" not in hashchain.json()


def test_admin_tokens_created_by_api_shown_by_cli(served, api):
    api.post("/admin/users", json={"name": "tom", "type": "hotp"})
    response = api.post("/admin/tokens", json={"user": "tom", "type": "totp", "description": "phone"})
    assert response.status_code == 201
    token = response.json()["token"]
    assert response.json()["uri"].startswith("otpauth://totp/")
    assert token == cli_json(served, "token", "show", token["serial"])
    recovery = api.post("/admin/tokens", json={"user": "tom", "type": "recovery", "count": 3})
    assert recovery.status_code == 201 and len(recovery.json()["recovery_codes"]) == 3
    assert "uri" not in recovery.json()
    listed = api.get("/admin/tokens", params={"user": "tom"}).json()["tokens"]
    cli_listed = [json.loads(line) for line in
                  run(served["dir"], "token", "list", "tom", "--json").splitlines()]
    assert listed == cli_listed and len(listed) == 3
    # the CLI's token, through the API
    serial = run(served["dir"], "token", "add", "tom", "--type", "hotp").split("\n")[0]
    assert serial.startswith("otpauth://hotp/")
    assert len(api.get("/admin/tokens", params={"user": "tom"}).json()["tokens"]) == 4


def test_admin_token_enable_disable_delete(served, api):
    api.post("/admin/users", json={"name": "dee", "type": "hotp"})
    serial = api.post("/admin/tokens", json={"user": "dee", "type": "hotp"}).json()["token"]["serial"]
    disabled = api.post(f"/admin/tokens/{serial}/disable")
    assert disabled.status_code == 200 and disabled.json()["token"]["enabled"] is False
    assert cli_json(served, "token", "show", serial)["enabled"] is False
    run(served["dir"], "token", "enable", serial)
    assert api.get(f"/admin/tokens/{serial}").json()["token"]["enabled"] is True
    assert api.post(f"/admin/tokens/{serial}/disable").status_code == 200
    assert api.post(f"/admin/tokens/{serial}/enable").json()["token"]["enabled"] is True
    assert api.delete(f"/admin/tokens/{serial}").json() == {"deleted": serial}
    gone = api.get(f"/admin/tokens/{serial}")
    assert gone.status_code == 404 and gone.json()["error"]["field"] == "serial"
    assert api.delete(f"/admin/tokens/{serial}").status_code == 404
    main = api.get("/admin/tokens", params={"user": "dee"}).json()["tokens"][0]
    refused = api.delete(f"/admin/tokens/{main['serial']}")
    assert refused.status_code == 400 and "main token" in refused.json()["error"]["message"]


def test_admin_resync_finds_the_counter(served, api):
    api.post("/admin/users", json={"name": "rae", "type": "hotp"})
    created = api.post("/admin/tokens", json={"user": "rae", "type": "hotp"}).json()
    serial = created["token"]["serial"]
    key = DataDir(served["dir"]).open_store().token(serial).material["key"]
    hotp = HOTP(bytes.fromhex(key))
    wrong = api.post(f"/admin/tokens/{serial}/resync", json={"otp1": "000000", "otp2": "000001"})
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "otp1"
    response = api.post(f"/admin/tokens/{serial}/resync",
                        json={"otp1": hotp.generate(40), "otp2": hotp.generate(41)})
    assert response.status_code == 200 and response.json() == {"serial": serial, "counter": 42}
    assert cli_json(served, "token", "show", serial)["counter"] == 42
    assert api.post(f"/admin/tokens/{serial}/resync", json={"otp1": "12"}).status_code == 400


def test_admin_set_pin_then_validate_needs_pin_plus_otp(served, api):
    api.post("/admin/users", json={"name": "pia", "type": "hotp"})
    key = DataDir(served["dir"]).open_store().account("pia").material["key"]
    hotp = HOTP(bytes.fromhex(key))
    pin = "p 1%é'"
    assert api.put("/admin/users/pia/pin", json={"pin": pin}).json() == {"user": "pia", "pin": True}
    assert cli_json(served, "account", "show", "pia")["pin"] is True
    with httpx.Client(base_url=served["url"], verify=False, timeout=10,
                      headers={"Authorization": f"Bearer {served['relay']}"}) as relay:
        alone = relay.post("/validate/check", json={"user": "pia", "pass": hotp.generate(0)}).json()
        assert alone["result"]["value"] is False
        both = relay.post("/validate/check", json={"user": "pia", "pass": pin + hotp.generate(1)})
        assert both.json()["result"]["value"] is True
    short = api.put("/admin/users/pia/pin", json={"pin": "12"})
    assert short.status_code == 400 and short.json()["error"]["field"] == "pin"
    assert api.delete("/admin/users/pia/pin").json() == {"user": "pia", "pin": False}
    assert api.put("/admin/users/nobody/pin", json={"pin": "1234"}).status_code == 404


def test_admin_lock_unlock_delete_user(served, api):
    api.post("/admin/users", json={"name": "lou", "type": "hotp"})
    assert api.post("/admin/users/lou/lock").json()["user"]["locked"] is True
    assert cli_json(served, "account", "show", "lou")["locked_until"] == "permanent"
    assert api.post("/admin/users/lou/unlock").json()["user"]["locked"] is False
    assert api.delete("/admin/users/lou").json() == {"deleted": "lou", "clients_deleted": []}
    for call in (api.get("/admin/users/lou"), api.delete("/admin/users/lou"),
                 api.post("/admin/users/lou/lock")):
        assert call.status_code == 404 and call.json()["error"]["field"] == "name"


def test_admin_import_with_a_password_does_not_stall_the_server(served, api):
    """A password-protected PSKC file costs up to MAX_PBKDF2_ITERATIONS rounds: they run in a
    worker thread, so the loop answers other requests (here /healthz, a store call on the
    loop) meanwhile instead of after the import."""
    from otpfast.importers import TokenSpec
    from otpfast.importers.pskc import MAX_PBKDF2_ITERATIONS, export_pskc

    spec = TokenSpec(source="test", type="hotp", secret=bytes(range(20)), counter=0,
                     serial="slow-1")
    document = export_pskc([spec], password="correct horse", iterations=MAX_PBKDF2_ITERATIONS)
    result = {}

    def do_import():
        started = time.perf_counter()
        result["response"] = api.post("/admin/tokens/import", json={
            "pskc": document.decode(), "password": "correct horse", "user": "slow"})
        result["took"] = time.perf_counter() - started

    worker = threading.Thread(target=do_import)
    worker.start()
    latencies = []
    with httpx.Client(base_url=served["url"], verify=False, timeout=20) as other:
        while worker.is_alive():
            started = time.perf_counter()
            assert other.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
    worker.join()
    assert result["response"].status_code == 201, result["response"].text
    assert result["took"] > 0.2 and len(latencies) >= 3
    assert max(latencies[1:]) < result["took"] / 2      # answered during the import


def test_admin_import_pskc_with_key_in_the_body(served, api):
    document = (VECTORS / "rfc6030-figure6.pskcxml").read_text()
    wrong = api.post("/admin/tokens/import", json={"pskc": document, "psk": "00" * 16, "user": "imp"})
    assert wrong.status_code == 400 and "wrong pre-shared key" in wrong.json()["error"]["message"]
    response = api.post("/admin/tokens/import", json={"pskc": document, "psk": FIGURE6_PSK,
                                                      "user": "imp"})
    assert response.status_code == 201
    [token] = response.json()["imported"]
    assert token["user"] == "imp" and token["new_user"] and token["main"]
    assert cli_json(served, "token", "show", token["serial"])["user"] == "imp"
    again = api.post("/admin/tokens/import", json={"pskc": document, "psk": FIGURE6_PSK, "user": "imp"})
    assert again.status_code == 409
    in_url = api.post("/admin/tokens/import", params={"psk": FIGURE6_PSK}, json={"pskc": document})
    assert in_url.status_code == 400
    assert api.post("/admin/tokens/import", json={"pskc": "<nope"}).status_code == 400
    assert api.post("/admin/tokens/import", json={"pskc": document, "psk": "zz"}).json()["error"]["field"] == "psk"
    served["stderr"].flush()
    assert FIGURE6_PSK not in pathlib.Path(served["stderr"].name).read_text()


def test_admin_audit_records_the_admin_and_pages(served, api):
    api.post("/admin/users", json={"name": "aud", "type": "hotp"})
    api.post("/admin/users/aud/lock")
    mine = audit_rows(api, account="aud")
    assert [e["outcome"] for e in mine] == ["account-added:hotp", "enrolment-shown", "account-locked"]
    assert {(e["event"], e["client"], e["source"]) for e in mine} == {("admin", "ops", "127.0.0.1")}
    assert [json.loads(line)["outcome"] for line in
            run(served["dir"], "audit", "list", "--account", "aud", "--json").splitlines()] == \
        [e["outcome"] for e in mine]
    first = api.get("/admin/audit", params={"account": "aud", "limit": 2}).json()
    assert len(first["entries"]) == 2 and first["next"] == first["entries"][-1]["seq"]
    rest = api.get("/admin/audit", params={"account": "aud", "after": first["next"]}).json()
    assert [e["outcome"] for e in rest["entries"]] == ["account-locked"] and rest["next"] is None
    assert audit_rows(api, account="aud", since="2999-01-01") == []
    assert audit_rows(api, account="aud", result="account-lock") == mine[-1:]
    for bad in ({"since": "yesterday"}, {"limit": "0"}, {"limit": "5000"}, {"after": "x"}):
        response = api.get("/admin/audit", params=bad)
        assert response.status_code == 400 and response.json()["error"]["field"] == next(iter(bad))


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer ops:wrong"},
                                     {"Authorization": "Basic b3BzOndyb25n"}],
                         ids=["none", "wrong", "not-bearer"])
def test_admin_without_the_admin_credential_is_403(served, headers):
    with httpx.Client(base_url=served["url"], verify=False, timeout=10) as client:
        response = client.get("/admin/users", headers=headers)
    assert response.status_code == 403 and response.headers.get("connection") == "close"
    assert response.json()["result"]["status"] is False


def test_admin_verifier_credential_is_refused_and_audited(served, api):
    with httpx.Client(base_url=served["url"], verify=False, timeout=10,
                      headers={"Authorization": f"Bearer {served['relay']}"}) as relay:
        assert relay.get("/healthz").status_code == 200     # the verifier may call the rest
        response = relay.post("/admin/users", json={"name": "sneaky", "type": "hotp"})
    assert response.status_code == 403
    assert api.get("/admin/users/sneaky").status_code == 404
    wait_for_audit(api, lambda e: e["client"] == "relay" and e["event"] == "admin",
                   result="rejected:not-authorised")


def test_admin_only_client_may_not_verify(served, api):
    with httpx.Client(base_url=served["url"], verify=False, timeout=10,
                      headers={"Authorization": f"Bearer {served['admin']}"}) as client:
        response = client.post("/validate/check", json={"user": "ann", "pass": "123456"})
    assert response.status_code == 403


def test_admin_auth_failures_are_throttled_per_source(served, api):
    """Failed admin logins from one source use up its failures (services.throttle): then
    even the right credential is refused from there, while other sources still work."""
    transport = httpx.HTTPTransport(verify=False, local_address="127.0.0.2")
    with httpx.Client(base_url=served["url"], transport=transport, timeout=10) as client:
        for attempt in range(120):
            response = client.get("/admin/users", headers={"Authorization": "Bearer ops2:wrong"})
            assert response.status_code == 403
        right = client.get("/admin/users", headers={"Authorization": f"Bearer {served['ops2']}"})
    assert right.status_code == 403
    assert api.get("/admin/users").status_code == 200       # 127.0.0.1, another admin
    # the first refusals one by one (a flood is aggregated: services.refusals)
    wait_for_audit(api, lambda e: e["source"] == "127.0.0.2" and e["client"] == "ops2",
                   result="refused:wrong-credential")


def test_admin_errors_are_clear_4xx(served, api):
    cases = [
        (api.post("/admin/users", content=b"{bad", headers={"Content-Type": "application/json"}), 400, None),
        (api.post("/admin/users", content=b"name=x", headers={"Content-Type": "text/plain"}), 415, None),
        (api.post("/admin/users", json={"name": "x", "type": "nope"}), 400, "type"),
        (api.post("/admin/users", json={"name": " x", "type": "hotp"}), 400, "name"),
        (api.post("/admin/users", json={"name": "x", "type": "hotp", "digits": 99}), 400, "digits"),
        (api.post("/admin/users", json={"type": "hotp"}), 400, "name"),
        (api.post("/admin/tokens", json={"user": "nobody", "type": "totp"}), 404, "user"),
        (api.post("/admin/tokens", json={"user": "ann", "type": "hashchain"}), 400, "type"),
        (api.get("/admin/tokens", params={"user": "nobody"}), 404, "user"),
        (api.get("/admin/tokens/NOPE"), 404, "serial"),
        (api.patch("/admin/users"), 405, None),
        (api.get("/admin/whatever"), 404, None),
    ]
    for response, status, field in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["status"] == status and error.get("field") == field and error["message"]
    assert api.get("/healthz").status_code == 200           # still serving


def test_admin_openapi_served_equals_the_packaged_file(served, api):
    from otpfast.net.http import openapi_document

    response = api.get("/openapi.json")
    assert response.status_code == 200 and response.json() == json.loads(openapi_document())


@pytest.mark.service
def test_admin_curl(served, api, require_service):
    require_service(shutil.which("curl") is not None, "curl")
    url = served["url"]

    def curl(*args):
        out = subprocess.run(["curl", "-sk", "-w", "\n%{http_code}", *args], capture_output=True,
                             text=True, timeout=20)
        body, _, code = out.stdout.rpartition("\n")
        return int(code), body

    code, body = curl("-H", f"Authorization: Bearer {served['admin']}", "-H",
                      "Content-Type: application/json", "-d", '{"name": "curly", "type": "totp"}',
                      f"{url}/admin/users")
    assert code == 201 and json.loads(body)["uri"].startswith("otpauth://totp/")
    code, body = curl("-H", f"Authorization: Bearer {served['admin']}", f"{url}/admin/users/curly")
    assert code == 200 and json.loads(body)["user"]["name"] == "curly"
    code, body = curl("-H", f"Authorization: Bearer {served['relay']}", f"{url}/admin/users")
    assert code == 403
    code, body = curl("-X", "DELETE", "-H", f"Authorization: Bearer {served['admin']}",
                      f"{url}/admin/users/curly")
    assert code == 200 and json.loads(body)["deleted"] == "curly"


def test_admin_only_client_may_not_verify_later_on_the_connection(served):
    """Proved once on a keep-alive connection, an admin-only client still may not verify."""
    with httpx.Client(base_url=served["url"], verify=False, timeout=10) as client:
        first = client.get("/admin/users", headers={"Authorization": f"Bearer {served['admin']}"})
        assert first.status_code == 200
        later = client.post("/validate/check", json={"user": "ann", "pass": "123456"})
    assert later.status_code == 403


def test_admin_credential_rotated_mid_connection_is_refused(served):
    path = served["dir"]
    credential = run(path, "client", "add", "temp-admin", "--admin").strip()
    with httpx.Client(base_url=served["url"], verify=False, timeout=10,
                      headers={"Authorization": f"Bearer temp-admin:{credential}"}) as client:
        assert client.get("/admin/users").status_code == 200
        new = run(path, "client", "rotate", "temp-admin").strip()
        assert client.get("/admin/users").status_code == 403        # same connection
    with httpx.Client(base_url=served["url"], verify=False, timeout=10,
                      headers={"Authorization": f"Bearer temp-admin:{new}"}) as client:
        assert client.get("/admin/users").status_code == 200        # still an admin
    run(path, "client", "delete", "temp-admin", "--yes")


def test_admin_secrets_never_reach_the_server_log(served, api):
    api.post("/admin/users", json={"name": "quiet", "type": "hotp"})
    api.put("/admin/users/quiet/pin", json={"pin": "never-logged-pin"})
    api.post("/admin/tokens/import", json={"pskc": "<x/>", "password": "never-logged-pw"})
    served["stderr"].flush()
    log = pathlib.Path(served["stderr"].name).read_text()
    assert "never-logged" not in log and served["admin"].split(":")[1] not in log
