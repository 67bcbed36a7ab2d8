"""The client's view of a share-server cluster (tprf tokens): the cluster file, per-server
credentials, and turning t partials into an OTP. No I/O but reading/writing the file.

Cluster file (JSON, 0600; public data only - addresses, pins, DKG results):

    {"servers": [{"name": "s1", "address": "HOST:PORT", "pin": "sha256:HEX"}, ...],
     "accounts": {"alice": {"serial": ..., "threshold": 3, "digits": 6,
                            "servers": ["s1", ...],            # index order: s1 holds k_1
                            "public": {"key": HEX, "shares": {"1": HEX, ...}},
                            "transcript": SHA-256 HEX}}}

A principal (device, verifier, admin) holds one credential for the whole cluster; it proves
to each share server a credential derived from it and that server's certificate fingerprint
(``server_credential``), so a share server learns nothing that would let it impersonate the
principal to the others.
"""
import base64
import hmac
import json
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from otpfast import tprf
from otpfast.errors import InvalidParameter, InvalidToken

from . import credentials, tprfdkg

DEFAULT_DIGITS = 6
DIGITS = (6, 7, 8)


def server_credential(credential, fingerprint: str) -> str:
    """The credential a principal proves to the share server with this TLS fingerprint."""
    key = HKDF(algorithm=hashes.SHA256(), length=credentials.CREDENTIAL_BYTES, salt=b"otpfast tprf credential v1",
               info=fingerprint.encode()).derive(credentials.normalise(credential))
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def _pin_ok(pin):
    digits = pin.lower().removeprefix("sha256:").replace(":", "")
    return pin.lower().startswith("sha256:") and len(digits) == 64 and all(c in "0123456789abcdef" for c in digits)


def _address_ok(address):
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isascii() and port.isdigit() and int(port) <= 65535)


class Cluster:
    def __init__(self, servers, accounts=None, path=None):
        self.servers = servers           # [{"name", "address", "pin"}]
        self.accounts = accounts or {}
        self.path = path

    @classmethod
    def load(cls, path):
        """InvalidParameter('cluster') if the file is missing or malformed."""
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            servers = data["servers"]
            names = [s["name"] for s in servers]
            ok = (isinstance(servers, list) and servers and len(set(names)) == len(names)
                  and all(isinstance(s[k], str) for s in servers for k in ("name", "address", "pin"))
                  and all(_pin_ok(s["pin"]) and _address_ok(s["address"]) for s in servers)
                  and isinstance(data.get("accounts", {}), dict))
        except OSError as exc:
            raise InvalidParameter("cluster", f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise InvalidParameter("cluster", f"{path} is not a cluster file (servers: name, HOST:PORT address, "
                                              "sha256: pin)")
        return cls(servers, data.get("accounts", {}), path)

    def save(self, path=None):
        path = path or self.path
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"servers": self.servers, "accounts": self.accounts}, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def server(self, name):
        for server in self.servers:
            if server["name"] == name:
                return server
        raise InvalidParameter("share-servers", f"no share server {name!r} in the cluster file")

    def account(self, name):
        """The account's public DKG result; InvalidParameter('account') if the file has none."""
        account = self.accounts.get(name)
        if account is None:
            raise InvalidParameter("account", f"{name!r} has no tprf token in the cluster file")
        return TprfAccount(name, account)


class TprfAccount:
    """One tprf token's public parameters (from the cluster file)."""

    def __init__(self, name, data):
        self.name = name
        self.serial = data["serial"]
        self.threshold = data["threshold"]
        self.digits = data.get("digits", DEFAULT_DIGITS)
        self.server_names = data["servers"]
        self.public_key = bytes.fromhex(data["public"]["key"])
        self.public_shares = {int(m): bytes.fromhex(v) for m, v in data["public"]["shares"].items()}

    def index_of(self, server_name):
        return self.server_names.index(server_name) + 1

    def element(self, counter):
        return tprf.hash_to_group(self.input(counter))

    def input(self, counter):
        return tprfdkg.evaluation_input(self.name, self.serial, counter)

    def check_partial(self, index, counter, element, evaluated, proof) -> bool:
        """The DLEQ proof shows ``evaluated`` = element^{k_index} for the k_index of the DKG."""
        public = self.public_shares.get(index)
        return public is not None and tprf.verify_proof(public, [element], [evaluated], proof)

    def otp(self, counter, partials) -> str:
        """The OTP from >= t checked partials ({index: H1(x)^{k_index}})."""
        if len(partials) < self.threshold:
            raise InvalidToken("fewer than t partials")
        chosen = dict(sorted(partials.items())[:self.threshold])
        return tprf.otp_digits(tprf.finalize(self.input(counter), tprf.combine(chosen)), self.digits)

    def matches(self, counter, partials, otp: str) -> bool:
        return hmac.compare_digest(self.otp(counter, partials).encode(), otp.encode())
