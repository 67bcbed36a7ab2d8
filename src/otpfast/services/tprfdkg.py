"""The DKG of a tprf token (joint-Feldman among its n share servers), as data: every round's
canonical JSON, signatures, share encryption, and the checks each party runs. No I/O: the
share servers (services.shares) and the orchestrating CLI (net.tprf) both call these.

Rounds (the orchestrator relays; each reply is signed by its share server's RSA key,
RSA-PSS-SHA256 under a per-round context; the servers' RSA public keys and TLS fingerprints
are fixed by the setup, which the orchestrator fetched over TLS pinned to each fingerprint):

1. ``setup``: ceremony id, account, serial, threshold t, the roster ``[{index, fingerprint,
   key}]``. Each server j draws f_j of degree t-1 and answers its *dealing*: the Feldman
   commitments g^{a_j0..a_j,t-1} and f_j(i) for every i, RSA-OAEP-encrypted to server i
   (label: ceremony, account, dealer, recipient), signed by j together with the digest of the
   setup it dealt under (an orchestrator showing servers different rosters is caught in
   round 2: every such dealing is accused and the ceremony aborts).
2. ``dealings``: all n signed dealings. Each server i checks each signature, decrypts its
   share and checks it against the commitments; it answers its signed *complaints*: for each
   bad dealer, the share it decrypted (or none) and why - the evidence, together with the
   dealer's signed commitments.
3. ``finish``: the transcript: setup, digest of the dealings, every commitment, every signed
   complaint, the qualified dealers (those nobody complained about; at least t of them, so
   at least one honest dealer: t-1 colluders can abort the ceremony, never choose k) and the
   public result g^k = prod C_j0, g^{k_m} = prod C_j(m) over the qualified. Each server
   recomputes all of it, keeps k_i = sum f_j(i) (pending) and signs the transcript.
4. ``confirm``: every server's signature on the transcript; each checks all n and
   activates the share. Every share server (and the orchestrator) keeps the signed transcript.
"""
import hashlib
import json
import secrets
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from otpfast import tprf
from otpfast.errors import Refused

SETUP, DEALINGS, FINISH, CONFIRM = 1, 2, 3, 4
MAX_SERVERS = 7          # the dealings of n servers fit one frame (protocol.messages.CEREMONY_LIMIT)
DOMAIN = b"otpfast tprf v1"
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
_CONTEXTS = {SETUP: b"otpfast tprf dealing v1\0", DEALINGS: b"otpfast tprf complaints v1\0",
             FINISH: b"otpfast tprf transcript v1\0", CONFIRM: b"otpfast tprf confirmed v1\0"}


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def parse(body: bytes) -> dict:
    """A round's JSON object; Refused if it is not one."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused("not JSON") from None
    if not isinstance(obj, dict):
        raise Refused("not a JSON object")
    return obj


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def evaluation_input(account: str, serial: str, counter: int) -> bytes:
    """x: binds the domain label, the account, the token serial and the counter."""
    a, s = account.encode(), serial.encode()
    return DOMAIN + b"\0" + struct.pack(">H", len(a)) + a + struct.pack(">H", len(s)) + s + struct.pack(">Q", counter)


def quorum_ok(threshold: int, n: int) -> bool:
    """t > n/2 (two quorums always share a server: exactly-once) and n within limits."""
    return 2 <= n <= MAX_SERVERS and 2 * threshold > n and threshold <= n


# -- RSA: signatures and share encryption ---------------------------------------------------
def sign(private_key, round_: int, body: bytes) -> bytes:
    return private_key.sign(_CONTEXTS[round_] + body, _PSS, hashes.SHA256())


def signed_by(pem: str, round_: int, body: bytes, signature: bytes) -> bool:
    try:
        key = serialization.load_pem_public_key(pem.encode())
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        key.verify(signature, _CONTEXTS[round_] + body, _PSS, hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _oaep(ceremony: str, account: str, dealer: int, recipient: int):
    label = b"otpfast tprf share v1\0" + canonical([ceremony, account, dealer, recipient])
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label)


def encrypt_share(pem: str, share: bytes, ceremony: str, account: str, dealer: int, recipient: int) -> bytes:
    key = serialization.load_pem_public_key(pem.encode())
    return key.encrypt(share, _oaep(ceremony, account, dealer, recipient))


def decrypt_share(private_key, blob: bytes, ceremony: str, account: str, dealer: int, recipient: int):
    """The share, or None if it does not decrypt to a 32-byte scalar."""
    try:
        share = private_key.decrypt(blob, _oaep(ceremony, account, dealer, recipient))
    except (ValueError, TypeError):
        return None
    return share if len(share) == 32 else None


def key_id(pem: str) -> str:
    """A share server's DKG identity: "sha256:" + hex SHA-256 of its RSA public key (DER),
    what operators pin as peers (``otpfast share-server peer add``)."""
    key = serialization.load_pem_public_key(pem.encode())
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def public_pem(private_key) -> str:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# -- round 1 ----------------------------------------------------------------------------------
def new_setup(account: str, serial: str, threshold: int, roster) -> bytes:
    """``roster``: [(fingerprint, RSA public key PEM)] in index order (1..n)."""
    servers = [{"index": i, "fingerprint": fp, "key": pem} for i, (fp, pem) in enumerate(roster, 1)]
    return canonical({"ceremony": secrets.token_hex(16), "account": account, "serial": serial,
                      "threshold": threshold, "domain": DOMAIN.decode(), "servers": servers})


def check_setup(setup: dict, account: str) -> None:
    """Refused unless the setup is well formed for ``account``."""
    try:
        servers = setup["servers"]
        ok = (setup["account"] == account and isinstance(setup["serial"], str) and 1 <= len(setup["serial"]) <= 64
              and isinstance(setup["ceremony"], str) and len(setup["ceremony"]) == 32
              and type(setup["threshold"]) is int and isinstance(servers, list)
              and quorum_ok(setup["threshold"], len(servers)) and setup.get("domain") == DOMAIN.decode()
              and [s["index"] for s in servers] == list(range(1, len(servers) + 1))
              and all(isinstance(s["fingerprint"], str) and isinstance(s["key"], str) for s in servers)
              and len({s["fingerprint"] for s in servers}) == len(servers))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise Refused("malformed setup")


def deal(setup: dict, dealer: int):
    """(dealing body, polynomial) of share server ``dealer``: commitments and encrypted shares."""
    coefficients = tprf.random_polynomial(setup["threshold"])
    shares = {}
    for server in setup["servers"]:
        i = server["index"]
        shares[str(i)] = encrypt_share(server["key"], tprf.poly_eval(coefficients, i), setup["ceremony"],
                                       setup["account"], dealer, i).hex()
    body = canonical({"ceremony": setup["ceremony"], "setup": digest(canonical(setup)), "dealer": dealer,
                      "commitments": [c.hex() for c in tprf.feldman_commitments(coefficients)], "shares": shares})
    return body, coefficients


# -- round 2 ----------------------------------------------------------------------------------
def dealings_body(setup: dict, signed_dealings) -> bytes:
    """``signed_dealings``: [(dealing body, signature)] in dealer order."""
    return canonical({"ceremony": setup["ceremony"],
                      "dealings": [[body.decode(), signature.hex()] for body, signature in signed_dealings]})


def read_dealings(setup: dict, body: dict):
    """[(dealer, commitments or None, dealing dict or None)] in dealer order; a dealing
    whose signature or form is wrong has commitments None. Refused if the list is not one
    dealing per server."""
    dealings = body.get("dealings")
    if body.get("ceremony") != setup["ceremony"] or not isinstance(dealings, list) \
            or len(dealings) != len(setup["servers"]):
        raise Refused("malformed dealings")
    out = []
    for server, entry in zip(setup["servers"], dealings):
        j = server["index"]
        try:
            text, signature = entry
            raw = text.encode()
            dealing = parse(raw)
            commitments = [bytes.fromhex(c) for c in dealing["commitments"]]
            ok = (signed_by(server["key"], SETUP, raw, bytes.fromhex(signature))
                  and dealing["ceremony"] == setup["ceremony"] and dealing["dealer"] == j
                  and dealing["setup"] == digest(canonical(setup))
                  and len(commitments) == setup["threshold"] and all(tprf.is_element(c) for c in commitments)
                  and set(dealing["shares"]) == {str(s["index"]) for s in setup["servers"]}
                  and all(isinstance(v, str) for v in dealing["shares"].values()))
        except (ValueError, TypeError, KeyError, Refused):
            ok = False
        out.append((j, commitments, dealing) if ok else (j, None, None))
    return out


def check_dealings(private_key, setup: dict, body: dict, me: int):
    """Server ``me``'s round 2: ({dealer: its share to me} of the good dealers,
    {dealer: commitments}, [complaint])."""
    good, commitments, complaints = {}, {}, []
    for j, dealer_commitments, dealing in read_dealings(setup, body):
        if dealer_commitments is None:
            complaints.append({"dealer": j, "share": None, "reason": "bad-signature-or-form"})
            continue
        commitments[j] = dealer_commitments
        try:
            blob = bytes.fromhex(dealing["shares"][str(me)])
        except ValueError:
            blob = b""
        share = decrypt_share(private_key, blob, setup["ceremony"], setup["account"], j, me)
        if share is None:
            complaints.append({"dealer": j, "share": None, "reason": "undecryptable"})
        elif not tprf.verify_share(me, share, dealer_commitments):
            complaints.append({"dealer": j, "share": share.hex(), "reason": "share-does-not-match-commitments"})
        else:
            good[j] = share
    return good, commitments, complaints


def complaints_body(setup: dict, dealings: bytes, me: int, complaints) -> bytes:
    return canonical({"ceremony": setup["ceremony"], "from": me, "dealings": digest(dealings),
                      "complaints": complaints})


# -- round 3 ----------------------------------------------------------------------------------
def public_result(threshold: int, n: int, commitments: dict, qualified):
    """{"key": g^k, "shares": {m: g^{k_m}}} (hex) from the qualified dealers' commitments."""
    key = None
    shares = {}
    for j in qualified:
        c0 = commitments[j][0]
        key = c0 if key is None else tprf.element_add(key, c0)
    for m in range(1, n + 1):
        acc = None
        for j in qualified:
            at = tprf.commitment_at(commitments[j], m)
            acc = at if acc is None else tprf.element_add(acc, at)
        shares[str(m)] = acc.hex()
    return {"key": key.hex(), "shares": shares}


def qualify(setup: dict, signed_complaints, dealings: bytes):
    """From every server's signed complaints ([(body, signature)] in server order): the
    accused dealers ({dealer: [evidence]}) and the qualified ones; Refused if a reply is not
    signed by its server or speaks of other dealings."""
    accused = {}
    if len(signed_complaints) != len(setup["servers"]):
        raise Refused("not one complaints reply per share server")
    for server, (raw, signature) in zip(setup["servers"], signed_complaints):
        body = parse(raw)
        if (not signed_by(server["key"], DEALINGS, raw, signature) or body.get("from") != server["index"]
                or body.get("ceremony") != setup["ceremony"] or body.get("dealings") != digest(dealings)
                or not isinstance(body.get("complaints"), list)):
            raise Refused(f"share server {server['index']} sent complaints not signed or about other dealings")
        for complaint in body["complaints"]:
            if not isinstance(complaint, dict) or type(complaint.get("dealer")) is not int:
                raise Refused(f"share server {server['index']} sent a malformed complaint")
            accused.setdefault(complaint["dealer"], []).append(
                {"by": server["index"], "share": complaint.get("share"), "reason": complaint.get("reason")})
    qualified = [s["index"] for s in setup["servers"] if s["index"] not in accused]
    return accused, qualified


def transcript_body(setup: dict, dealings: bytes, commitments: dict, signed_complaints, accused, qualified,
                    public) -> bytes:
    return canonical({
        "setup": setup, "dealings": digest(dealings),
        "commitments": {str(j): [c.hex() for c in cs] for j, cs in sorted(commitments.items())},
        "complaints": [[raw.decode(), signature.hex()] for raw, signature in signed_complaints],
        "accused": {str(j): evidence for j, evidence in sorted(accused.items())},
        "qualified": qualified, "public": public})


def finish(setup: dict, dealings: bytes, commitments: dict, transcript: dict):
    """Check a transcript against what this server saw (setup, dealings, commitments) and
    recompute the qualified set and the public result; return (qualified, public)."""
    signed = [(raw.encode(), bytes.fromhex(sig)) for raw, sig in transcript["complaints"]]
    accused, qualified = qualify(setup, signed, dealings)
    if len(qualified) < setup["threshold"]:
        raise Refused("fewer than t qualified dealers")
    if any(j not in commitments for j in qualified):
        raise Refused("a qualified dealer's dealing did not verify here")
    public = public_result(setup["threshold"], len(setup["servers"]), commitments, qualified)
    expected = {"setup": setup, "dealings": digest(dealings),
                "commitments": {str(j): [c.hex() for c in cs] for j, cs in sorted(commitments.items())},
                "complaints": transcript["complaints"],
                "accused": {str(j): evidence for j, evidence in sorted(accused.items())},
                "qualified": qualified, "public": public}
    if canonical(expected) != canonical(transcript):
        raise Refused("the transcript differs from what this server saw")
    return qualified, public


def combined_share(good: dict, qualified) -> bytes:
    share = None
    for j in qualified:
        share = good[j] if share is None else tprf.scalar_add(share, good[j])
    return share
