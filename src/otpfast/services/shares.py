"""The share server's logic (tprf tokens): authenticate principals, run its side of the DKG
(services.tprfdkg), and evaluate its share k_j at a counter - once for issuing (a device of the
account, only at or above the watermark) and once for verifying (a verifier; the counter is
marked consumed durably *before* the partial is computed and answered, and never evaluated
for a verification again).

A partial is H1(x)^{k_j} with a DLEQ proof that it used the same k_j as g^{k_j} of the DKG;
x = tprfdkg.evaluation_input(account, serial, counter). The server never sees an OTP, k, or
another server's share.

Refusals: a wrong credential, a principal asking outside its role, an unknown account ->
Refused (the connection gets one Error and closes); a counter the rules forbid or an
account out of verification attempts -> CounterRefused (the connection goes on: a verifier
tries the next counter). Refusals are logged with their reason, never with a secret.

A row of the store that fails its integrity check (store.shares: edited, rolled back or deleted
without the at-rest key) -> the store logs it, this server counts it (``integrity_refusals``)
and refuses that principal or account like an unknown one (Refused: no partial, ever).
"""
import dataclasses
import logging
import threading
import time

from otpfast import tprf
from otpfast.errors import Refused
from otpfast.store.shares import ADMIN, DEVICE, ISSUE, ROLES, VERIFIER, VERIFY, IntegrityError

from . import credentials, policy, tprfdkg
from .throttle import Rate, RateLimiter

log = logging.getLogger("otpfast.shares")

# Wrong OTPs an account may cost before verifications of it are refused for a while: each
# one already burns a counter, so this only slows a login service used as a guessing oracle.
FAILED_PER_ACCOUNT = Rate(rate=1 / 30, burst=10)
# Ceremonies this server keeps half-done in memory (the dealer's polynomial never touches disk;
# a restart aborts the ceremony, the orchestrator starts a new one).
PENDING_CEREMONIES = 64


class CounterRefused(Refused):
    """This counter may not be evaluated (issued below the watermark, consumed, throttled)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    account: str | None
    session_key: bytes = dataclasses.field(repr=False, compare=False)
    source: str = "-"


class _Pending:
    """One ceremony in progress on this server (memory only)."""

    __slots__ = ("setup", "me", "dealings", "good", "commitments", "transcript")

    def __init__(self, setup, me):
        self.setup = setup
        self.me = me
        self.dealings = None       # round 2 body (bytes)
        self.good = None
        self.commitments = None
        self.transcript = None     # round 3 transcript (bytes)


class ShareServer:
    def __init__(self, store, private_key, fingerprint: str, *, clock=time.time):
        self.store = store
        self._private_key = private_key
        self.pem = tprfdkg.public_pem(private_key)
        self.fingerprint = fingerprint
        self.clock = clock
        self._failed_sources = RateLimiter(policy.FAILED_PER_SOURCE, clock=clock)
        self._failed_accounts = RateLimiter(FAILED_PER_ACCOUNT, clock=clock)
        self._pending = {}
        self._lock = threading.Lock()
        self.integrity_refusals = 0     # requests refused because a store row failed its check

    def _checked(self, fn, *args):
        """``fn(*args)`` of the store; a row failing its check -> counted, Refused."""
        try:
            return fn(*args)
        except IntegrityError:
            self.integrity_refusals += 1
            raise Refused() from None

    def set_failure_limits(self, per_source, per_client=None) -> None:
        """A new per-source failure throttle while serving (SIGHUP); ``per_client`` is the
        distribution server's (a share server's refusals are per source and per account)."""
        self._failed_sources.limit = per_source

    def public_key_pem(self) -> bytes:
        return self.pem.encode()

    @property
    def key_id(self) -> str:
        return tprfdkg.key_id(self.pem)

    def add_peer(self, key_id: str) -> None:
        """Pin a peer's DKG key id: once any peer is pinned, this server deals only in
        rosters made of itself and pinned peers."""
        self.store.add_peer(key_id, self.clock())

    def close(self):
        self.store.close()

    # -- principals ---------------------------------------------------------------------------
    def add_principal(self, name: str, role: str, *, account: str | None = None,
                      credential: str | None = None) -> str:
        """Register a principal; returns its credential (a new one unless given: the same
        credential may be registered on every share server of a cluster, see net.tprf)."""
        if role not in ROLES or (role == DEVICE) != (account is not None):
            raise ValueError("a device names its account; verifiers and admins do not")
        credential = credential or credentials.new_credential()
        if not self.store.add_principal(name, role, account, credentials.credential_hash(credential), self.clock()):
            raise Refused(f"principal {name!r} exists")
        return credential

    def authenticate(self, exchange: credentials.Exchange, proof: bytes, *, source: str = "-") -> Principal:
        source = str(source)[:64]
        if self._failed_sources.blocked(source):
            log.info("authentication from %s refused: throttled", source)
            raise Refused()
        record = self._checked(self.store.principal, exchange.principal) \
            if exchange.kind == credentials.CLIENT else None
        session_key = credentials.check_proof(proof, None if record is None else record[2], exchange)
        if session_key is None:
            self._failed_sources.charge(source)
            log.info("authentication of %r from %s refused: %s", exchange.principal[:64], source,
                     "unknown principal" if record is None else "wrong credential")
            raise Refused()
        return Principal(exchange.principal, record[0], record[1], session_key, source)

    # -- evaluation ---------------------------------------------------------------------------
    def _share(self, principal, account, roles):
        if principal.role not in roles or (principal.role == DEVICE and principal.account != account):
            log.info("%s (%s) refused for %r: not authorised", principal.name, principal.role, account[:128])
            raise Refused()
        record = self._checked(self.store.share, account)
        if record is None or not record.active:
            log.info("%s refused for %r: no active share", principal.name, account[:128])
            raise Refused()
        return record

    def status(self, principal: Principal, account: str):
        """(watermark, outstanding counters) for a device of the account or a verifier."""
        self._share(principal, account, (DEVICE, VERIFIER))
        return self._checked(self.store.status, account)

    def evaluate(self, principal: Principal, account: str, counter: int, purpose: int):
        """(index, H1(x)^{k_j}, DLEQ proof) for ``counter``; the counter is marked (issued or
        consumed) and committed before anything is computed."""
        if purpose == ISSUE:
            record = self._share(principal, account, (DEVICE,))
        elif purpose == VERIFY:
            record = self._share(principal, account, (VERIFIER,))
            if self._failed_accounts.blocked(account):
                log.info("verification of %r refused: throttled (wrong OTPs)", account[:128])
                raise CounterRefused()
        else:
            raise Refused()
        if not self._checked(self.store.mark, account, counter, purpose, principal.name, self.clock()):
            log.info("%s of %r at counter %d refused: %s", "issue" if purpose == ISSUE else "verification",
                     account[:128], counter, "below the watermark" if purpose == ISSUE else "consumed")
            raise CounterRefused()
        element = tprf.hash_to_group(tprfdkg.evaluation_input(account, record.serial, counter))
        evaluated = tprf.evaluate(record.share, element)
        proof = tprf.prove(record.share, record.public_shares[record.index], [element], [evaluated])
        return record.index, evaluated, proof

    def outcome(self, principal: Principal, account: str, counter: int, accepted: bool) -> None:
        """A verifier's verdict on a counter this server consumed: a wrong OTP counts toward
        the account's throttle."""
        self._share(principal, account, (VERIFIER,))
        if not accepted and self._checked(self.store.consumed, account, counter):
            self._failed_accounts.charge(account)
            log.info("wrong OTP for %r at counter %d (reported by %s)", account[:128], counter, principal.name)

    # -- the DKG ------------------------------------------------------------------------------
    def ceremony(self, principal: Principal, account: str, round_: int, body: bytes):
        """This server's answer to one DKG round: (reply body, its signature; in round 3 the
        signature over the transcript)."""
        if principal.role != ADMIN:
            log.info("%s (%s) refused: only an admin runs a DKG", principal.name, principal.role)
            raise Refused()
        with self._lock:
            try:
                reply = self._round(account, round_, body)
            except Refused as exc:
                log.warning("DKG of %r round %d refused: %s", account[:128], round_, exc or "refused")
                self._pending.pop(account, None)
                raise Refused() from None
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("DKG of %r round %d refused: malformed (%s)", account[:128], round_,
                            type(exc).__name__)
                self._pending.pop(account, None)
                raise Refused() from None
        # round 3 signs the transcript itself: the signatures every server keeps
        return reply, tprfdkg.sign(self._private_key, round_, body if round_ == tprfdkg.FINISH else reply)

    def _round(self, account, round_, body):
        data = tprfdkg.parse(body)
        if round_ == tprfdkg.SETUP:
            return self._deal(account, data)
        pending = self._pending.get(account)
        if pending is None:
            raise Refused("no ceremony in progress")
        if round_ == tprfdkg.DEALINGS and pending.dealings is None:
            pending.dealings = body
            pending.good, pending.commitments, complaints = tprfdkg.check_dealings(
                self._private_key, pending.setup, data, pending.me)
            for complaint in complaints:
                log.warning("DKG of %r: dealer %d is accused by this server: %s", account[:128],
                            complaint["dealer"], complaint["reason"])
            return tprfdkg.complaints_body(pending.setup, body, pending.me, complaints)
        if round_ == tprfdkg.FINISH and pending.dealings is not None and pending.transcript is None:
            qualified, public = tprfdkg.finish(pending.setup, pending.dealings, pending.commitments, data)
            if any(j not in pending.good for j in qualified):
                raise Refused("a qualified dealer's share to this server is bad")
            share = tprfdkg.combined_share(pending.good, qualified)
            if tprf.public_key(share) != bytes.fromhex(public["shares"][str(pending.me)]):
                raise Refused("the combined share does not match the public result")
            if not self._checked(self.store.add_share, account, pending.setup["serial"], pending.me,
                                 pending.setup["threshold"], share, public, body, self.clock()):
                raise Refused("the account has a share already")
            pending.transcript = body
            return tprfdkg.canonical({"index": pending.me, "transcript": tprfdkg.digest(body)})
        if round_ == tprfdkg.CONFIRM and pending.transcript is not None:
            signatures = data.get("signatures")
            servers = pending.setup["servers"]
            if not isinstance(signatures, dict) or set(signatures) != {str(s["index"]) for s in servers}:
                raise Refused("not every share server's signature")
            for server in servers:
                if not tprfdkg.signed_by(server["key"], tprfdkg.FINISH, pending.transcript,
                                         bytes.fromhex(signatures[str(server["index"])])):
                    raise Refused(f"share server {server['index']}'s transcript signature is wrong")
            if not self._checked(self.store.confirm, account, pending.transcript, signatures, self.clock()):
                raise Refused("nothing to confirm")
            del self._pending[account]
            log.info("DKG of %r complete: this server holds share %d", account[:128], pending.me)
            return tprfdkg.canonical({"confirmed": account, "transcript": tprfdkg.digest(pending.transcript)})
        raise Refused("round out of order")

    def _deal(self, account, setup):
        tprfdkg.check_setup(setup, account)
        existing = self._checked(self.store.share, account)
        if existing is not None and existing.active:      # an unconfirmed one may be redone
            raise Refused("the account has a share already")
        mine = [s for s in setup["servers"] if s["fingerprint"] == self.fingerprint]
        if len(mine) != 1 or mine[0]["key"] != self.pem:
            raise Refused("this server is not in the roster as itself")
        peers = self._checked(self.store.peers)
        if peers:
            strangers = [s["index"] for s in setup["servers"]
                         if s["key"] != self.pem and tprfdkg.key_id(s["key"]) not in peers]
            if strangers:
                raise Refused(f"roster entries {strangers} are not pinned peers of this server")
        pending = _Pending(setup, mine[0]["index"])
        dealing = self._dealing(setup, pending.me)
        self._pending.pop(account, None)
        while len(self._pending) >= PENDING_CEREMONIES:
            self._pending.pop(next(iter(self._pending)))
        self._pending[account] = pending
        return dealing

    def _dealing(self, setup, me):
        """This server's dealing; the polynomial is dropped here (its own share comes back
        to it, encrypted, like everyone's)."""
        body, _polynomial = tprfdkg.deal(setup, me)
        return body
