"""PSKC import/export: RFC 6030's own examples, MACs, wrong keys, hostile files, round trips."""
import base64
import io
import json
import pathlib
import re
import shutil
import subprocess
from dataclasses import replace

import pskc
import pytest

from otpfast.errors import InvalidParameter, InvalidToken
from otpfast.hotp import HOTP
from otpfast.importers import TokenSpec, export_pskc, read_pskc, read_tokens
from otpfast.importers.pskc import MAX_PBKDF2_ITERATIONS

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "vectors"
RFC4226_KEY = b"12345678901234567890"
FIGURE6_PSK = bytes.fromhex("12345678901234567890123456789012")
FIGURE7_PASSWORD = "qwerty"


def figure(n):
    return (VECTORS / "pskc" / f"rfc6030-figure{n}.pskcxml").read_bytes()


def rfc4226_8_digits():
    """RFC 4226 Appendix D's truncated values for counters 0 and 1, cut to 8 digits."""
    table = json.loads((VECTORS / "rfc4226_appendix_d.json").read_text())
    values = [f"{case['truncated_decimal'] % 10**8:08d}" for case in table["cases"][:2]]
    assert values == ["84755224", "94287082"]  # the RFC's table, read by eye
    return values


@pytest.mark.parametrize("n, kwargs", [
    (3, {}),
    (6, {"psk": FIGURE6_PSK}),
    (7, {"password": FIGURE7_PASSWORD}),
], ids=["plaintext-figure3", "psk-figure6", "pbkdf2-figure7"])
def test_pskc_rfc6030_examples_import_rfc4226_key(n, kwargs):
    (spec,) = read_tokens(figure(n), "pskc", **kwargs)
    assert spec.secret == RFC4226_KEY
    assert (spec.type, spec.digits, spec.counter, spec.algorithm) == ("hotp", 8, 0, "sha1")
    assert spec.serial == "987654321"
    assert spec.source == "KeyPackage 1 (serial 987654321)"
    hotp = HOTP(spec.secret, digits=spec.digits, algorithm=spec.algorithm)
    first, second = rfc4226_8_digits()
    assert hotp.generate(spec.counter) == first
    assert hotp.generate(spec.counter + 1) == second
    assert hotp.verify(first, spec.counter) == 0
    assert hotp.verify(second, spec.counter + 1) == 1
    with pytest.raises(InvalidToken):  # the 6-digit codes of the same key are refused
        hotp.verify("755224", spec.counter)


def test_pskc_totp_profile_example_carries_time_step_and_drift():
    data = (VECTORS / "pskc" / "draft-hoyer-totp.pskcxml").read_bytes()
    (spec,) = read_pskc(data)
    assert (spec.type, spec.serial, spec.digits, spec.period, spec.t0, spec.drift,
            spec.counter, spec.secret) == ("totp", "987654323", 6, 30, 0, 4, None, RFC4226_KEY)


def test_pskc_multiotp_vendor_files_with_encrypted_counters_and_time_steps():
    first, second = read_pskc(
        (VECTORS / "pskc" / "multiotp-tokens_totp_aes.pskc").read_bytes(), psk=FIGURE6_PSK)
    assert first.secret.hex() == ("38c2506a8e0708a5e929c2686b827e0ba7ae28c9de3c83e6d27308345981"
                                  "a3de")
    assert (first.type, first.algorithm, first.digits, first.period, first.t0) == (
        "totp", "sha256", 8, 30, 0)
    assert (first.serial, second.serial) == ("ZZ8000000001", "ZZ8000000002")
    (hotp,) = read_pskc((VECTORS / "pskc" / "multiotp-tokens_hotp_pbe.pskc").read_bytes(),
                        password="qwerty")
    assert hotp.secret.hex() == "5d3a38bf5476d6f0b897f1e62887cb3ce833a5b9"
    assert hotp.type == "hotp" and isinstance(hotp.counter, int)


def test_pskc_bad_mac_on_second_keypackage_imports_nothing():
    data = (VECTORS / "pskc" / "multiotp-tokens_totp_aes.pskc").read_bytes()
    second = data.index(b"<pskc:KeyPackage>", data.index(b"<pskc:KeyPackage>") + 1)
    data = data[:second] + _tamper_mac(data[second:])
    with pytest.raises(InvalidParameter, match=r"KeyPackage 2 \(serial ZZ8000000002\).*MAC"):
        read_pskc(data, psk=FIGURE6_PSK)


def test_pskc_figure2_short_secret_refused_by_keypackage():
    with pytest.raises(InvalidParameter, match=r"KeyPackage 1: secret: the key has 32 bits"):
        read_pskc(figure(2))


def test_pskc_figure8_asymmetric_encryption_refused_by_name():
    with pytest.raises(InvalidParameter, match="encrypted"):
        read_pskc(figure(8))
    with pytest.raises(InvalidParameter, match=r"KeyPackage 1 \(serial 987654321\).*rsa_1_5"):
        read_pskc(figure(8), psk=FIGURE6_PSK)


def _tamper_mac(data):
    """Replace the secret's ValueMAC with another valid-looking base64 MAC."""
    match = re.search(rb"<(\w+:)?ValueMAC>\s*([A-Za-z0-9+/=]+)\s*<", data)
    mac = bytearray(base64.b64decode(match.group(2)))
    mac[0] ^= 1
    return data[:match.start(2)] + base64.b64encode(bytes(mac)) + data[match.end(2):]


def _tamper_ciphertext(data):
    """Flip one bit in the secret's IV: decrypts fine (CBC), only the MAC can tell."""
    match = re.search(rb"<(\w+:)?Secret>.*?CipherValue>\s*([A-Za-z0-9+/=]+)\s*<", data, re.S)
    raw = bytearray(base64.b64decode(match.group(2)))
    raw[0] ^= 1
    return data[:match.start(2)] + base64.b64encode(bytes(raw)) + data[match.end(2):]


@pytest.mark.parametrize("tamper", [_tamper_mac, _tamper_ciphertext])
@pytest.mark.parametrize("n, kwargs", [(6, {"psk": FIGURE6_PSK}),
                                       (7, {"password": FIGURE7_PASSWORD})])
def test_pskc_tampered_mac_imports_nothing(n, kwargs, tamper):
    data = tamper(figure(n))
    assert data != figure(n)
    with pytest.raises(InvalidParameter, match=r"KeyPackage 1 .*(MAC|padding)"):
        read_pskc(data, **kwargs)


@pytest.mark.parametrize("n", [6, 7])
def test_pskc_stripped_mac_refused(n):
    """python-pskc skips the check when <ValueMAC> is missing; we refuse the value."""
    data = re.sub(rb"<(\w+:)?ValueMAC>[^<]*</(\w+:)?ValueMAC>", b"", figure(n))
    kwargs = {"psk": FIGURE6_PSK} if n == 6 else {"password": FIGURE7_PASSWORD}
    with pytest.raises(InvalidParameter, match="has no MAC"):
        read_pskc(data, **kwargs)


def test_pskc_plaintext_secret_injected_into_encrypted_file_refused():
    # python-pskc prefers a <PlainValue> over the MAC-protected <EncryptedValue>
    injected = base64.b64encode(b"attacker-chosen-secret!!")
    data = figure(6).replace(b"<EncryptedValue>", b"<PlainValue>" + injected
                             + b"</PlainValue><EncryptedValue>", 1)
    assert pskc.PSKC(io.BytesIO(data)).keys[0].secret == b"attacker-chosen-secret!!"
    with pytest.raises(InvalidParameter, match="plaintext inside an encrypted file"):
        read_pskc(data, psk=FIGURE6_PSK)


@pytest.mark.parametrize("n, kwargs", [
    (6, {"psk": bytes(16)}),
    (6, {"psk": FIGURE6_PSK[:-1] + b"\x00"}),
    (7, {"password": "qwertz"}),
])
def test_pskc_wrong_key_or_password_refused_clearly(n, kwargs):
    with pytest.raises(InvalidParameter, match=r"KeyPackage 1 .*wrong pre-shared key or password"):
        read_pskc(figure(n), **kwargs)


@pytest.mark.parametrize("n, kwargs, message", [
    (6, {}, "encrypted: give the pre-shared key or the password"),
    (6, {"password": "qwerty"}, "pre-shared key, not a password"),
    (7, {"psk": FIGURE6_PSK}, "password \\(PBKDF2\\), not a pre-shared key"),
    (6, {"psk": b"short"}, "16, 24 or 32 bytes"),
    (3, {"psk": FIGURE6_PSK}, "not encrypted"),
    (6, {"psk": FIGURE6_PSK, "password": "qwerty"}, "not both"),
])
def test_pskc_key_mismatch_refused(n, kwargs, message):
    with pytest.raises(InvalidParameter, match=message):
        read_pskc(figure(n), **kwargs)


def test_pskc_doctype_refused():
    data = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
            + figure(3).split(b"?>", 1)[1])
    with pytest.raises(InvalidParameter, match="DOCTYPE"):
        read_pskc(data)


def test_pskc_pbkdf2_cost_is_bounded():
    data = figure(7).replace(b"<IterationCount>1000<",
                             b"<IterationCount>%d<" % (MAX_PBKDF2_ITERATIONS + 1))
    with pytest.raises(InvalidParameter, match="iteration count"):
        read_pskc(data, password=FIGURE7_PASSWORD)


def test_pskc_one_bad_key_imports_nothing():
    two = figure(3).replace(b"</KeyContainer>", b"").rstrip() + (
        b"<KeyPackage><Key Id='2' Algorithm='urn:ietf:params:xml:ns:keyprov:pskc:ocra'>"
        b"<Data><Secret><PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=</PlainValue></Secret></Data>"
        b"</Key></KeyPackage></KeyContainer>")
    with pytest.raises(InvalidParameter, match=r"KeyPackage 2: algorithm .*ocra.* not supported"):
        read_pskc(two)


@pytest.mark.parametrize("data", [b"", b"not xml", b"<a/>", b"<KeyContainer/>"])
def test_pskc_garbage_refused(data):
    with pytest.raises(InvalidParameter):
        read_pskc(data)


def _specs():
    return [
        TokenSpec(source="a", type="hotp", secret=RFC4226_KEY, digits=8, counter=42,
                  serial="HW-0001", issuer="Acme", description="blue token", user="alice"),
        TokenSpec(source="b", type="totp", secret=bytes(range(32)), digits=6,
                  algorithm="sha256", period=60, t0=0, drift=-2, serial="HW-0002"),
        TokenSpec(source="c", type="totp", secret=bytes(range(64)), digits=7,
                  algorithm="sha512", period=30, t0=0, drift=0),
    ]


@pytest.mark.parametrize("protect", [{"psk": FIGURE6_PSK}, {"psk": bytes(range(32))},
                                     {"password": "correct horse"}], ids=["psk128", "psk256",
                                                                          "pbkdf2"])
def test_pskc_export_reads_back_equal(protect):
    data = export_pskc(_specs(), **protect, **({"iterations": 1000} if "password" in protect
                                                else {}))
    assert RFC4226_KEY not in data and b"MTIzNDU2Nzg5MDEyMzQ1Njc4OTA" not in data
    # python-pskc itself reads it back equal
    container = pskc.PSKC(io.BytesIO(data))
    if "psk" in protect:
        container.encryption.key = protect["psk"]
    else:
        container.encryption.derive_key(protect["password"])
    first = container.keys[0]
    assert (first.secret, first.serial, first.counter, first.response_length) == (
        RFC4226_KEY, "HW-0001", 42, 8)
    assert all(key.check() for key in container.keys)
    # and so does our reader, field for field
    back = read_pskc(data, **protect)
    assert [replace(s, source="") for s in back] == [replace(s, source="") for s in _specs()]


def test_pskc_export_refuses_missing_or_double_protection():
    with pytest.raises(InvalidParameter, match="exactly one"):
        export_pskc(_specs())
    with pytest.raises(InvalidParameter, match="exactly one"):
        export_pskc(_specs(), psk=FIGURE6_PSK, password="x")
    with pytest.raises(InvalidParameter, match="16, 24 or 32"):
        export_pskc(_specs(), psk=b"x" * 20)


@pytest.mark.service
def test_pskc_export_validates_with_pskctool(require_service, tmp_path):
    pskctool = shutil.which("pskctool")
    require_service(pskctool is not None, "pskctool (oath-toolkit)")
    for protect in ({"psk": FIGURE6_PSK}, {"password": "pw"}):
        path = tmp_path / "export.pskcxml"
        path.write_bytes(export_pskc(_specs(), **protect, **(
            {"iterations": 1000} if "password" in protect else {})))
        out = subprocess.run([pskctool, "--validate", str(path)],
                             capture_output=True, text=True, timeout=60)
        # pskctool exits 0 either way and prints OK or FAIL
        assert out.returncode == 0 and out.stdout.strip() == "OK", out.stdout + out.stderr
