"""Clients of a share-server cluster (tprf tokens): the device's issue, the verifier's check
and the DKG's orchestration, each over TLS connections pinned to the cluster file's
fingerprints (net.client's rules), authenticated with the per-server credential
(services.tprfcluster.server_credential).

Issue: the device asks t reachable servers for their watermarks, picks the highest, asks
them to evaluate there (another server if one refuses), checks each DLEQ proof against
g^{k_j}, combines (Lagrange in the exponent), Finalizes and takes the digits.
Verify: the verifier gathers the outstanding counters from every reachable server (at least
t: any issuing quorum meets them), then for each counter, newest first, asks servers until t
valid partials arrive - each server consumes the counter before answering - and compares.
Without t valid partials nothing is accepted.
"""
import asyncio
import contextlib
import hmac
import logging

from ..errors import LocalProtocolError, ProtocolError, Refused
from ..protocol import shares as shares_protocol
from ..protocol._connection import CLIENT
from ..protocol.messages import (AuthProof, AuthStart, CeremonyStep, Evaluate, Hello, Outcome, Partial,
                                 ShareStatus)
from ..services import credentials, tprfdkg
from ..services.tprfcluster import server_credential
from ..store.shares import ISSUE, VERIFY
from . import tls
from .client import FramedClient, parse_address
from .shares import unpack_counters

log = logging.getLogger("otpfast.net.tprf")

# Candidate counters a verification tries: a device rarely holds more than one unused OTP.
VERIFY_CANDIDATES = 4


class ShareClient(FramedClient):
    """One TLS connection to a share server; concurrent callers take turns (one request in
    flight at a time)."""

    def __init__(self, name, reader, writer, fingerprint, *, timeout, binding):
        super().__init__(reader, writer, shares_protocol.Connection(CLIENT), fingerprint, timeout=timeout,
                         binding=binding)
        self.name = name
        self._turn = asyncio.Lock()

    async def _ask(self, message):
        async with self._turn:
            await self._send(message)
            return await self._receive()

    async def public_key(self) -> str:
        return (await self._ask(Hello())).pem.decode()

    async def authenticate(self, principal, credential):
        client_nonce = credentials.new_nonce()
        challenge = await self._ask(AuthStart(principal, client_nonce))
        exchange = credentials.Exchange(credentials.CLIENT, principal, client_nonce, challenge.server_nonce,
                                        self._binding)
        proof, session_key = credentials.prove(server_credential(credential, self.fingerprint), exchange)
        ok = await self._ask(AuthProof(proof))
        if not hmac.compare_digest(ok.server_signature, credentials.server_signature(session_key)):
            raise Refused("the server did not prove it knows this credential")

    async def status(self, account):
        state = await self._ask(ShareStatus(account))
        return state.watermark, unpack_counters(state.outstanding)

    async def evaluate(self, account, counter, purpose):
        """The Partial, or None if the server refused this counter."""
        reply = await self._ask(Evaluate(account, counter, purpose))
        return reply if type(reply) is Partial else None

    async def outcome(self, account, counter, accepted):
        await self._ask(Outcome(account, counter, 1 if accepted else 0))

    async def ceremony(self, account, round_, body):
        reply = await self._ask(CeremonyStep(account, round_, body))
        return reply.body, reply.signature

    async def aclose(self):
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError, ProtocolError):
            async with asyncio.timeout(self.timeout):
                await self._writer.wait_closed()


async def connect_share(server, *, timeout=10.0):
    """A ShareClient to ``server`` ({"name", "address", "pin"}), the pin checked."""
    host, port = parse_address(server["address"], field="cluster")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, ssl=tls.client_context(),
                                                       ssl_handshake_timeout=timeout, limit=1 << 20)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        fingerprint = tls.check_server(server["address"], der, pin=server["pin"])
        return ShareClient(server["name"], reader, writer, fingerprint, timeout=timeout, binding=tls.end_point(der))
    except BaseException:
        writer.close()
        raise


class Session:
    """Authenticated connections to the reachable servers of a list (async context manager);
    ``clients`` in list order; servers unreachable, refusing or not matching their pin are left
    out (``failed`` names them; a pin mismatch is logged as a warning)."""

    def __init__(self, servers, principal, credential, *, timeout=10.0):
        self._servers = servers
        self._principal = principal
        self._credential = credential
        self._timeout = timeout
        self.clients = []
        self.failed = []

    async def _open(self, server):
        client = await connect_share(server, timeout=self._timeout)
        try:
            await client.authenticate(self._principal, self._credential)
        except BaseException:
            await client.aclose()
            raise
        return client

    async def __aenter__(self):
        results = await asyncio.gather(*(self._open(s) for s in self._servers), return_exceptions=True)
        for server, result in zip(self._servers, results):
            if isinstance(result, BaseException):
                if not isinstance(result, (OSError, asyncio.TimeoutError, ProtocolError, Refused)):
                    await self.__aexit__(None, None, None)
                    raise result
                if isinstance(result, tls.FingerprintMismatch):     # not trusted: as if down
                    log.warning("share server %s: %s", server["name"], result)
                self.failed.append(server["name"])
            else:
                self.clients.append(result)
        return self

    async def __aexit__(self, *exc_info):
        await asyncio.gather(*(c.aclose() for c in self.clients), return_exceptions=True)


async def _try(coro):
    """The result, or None if the server failed or refused (it counts as not answering)."""
    try:
        return await coro
    except (OSError, asyncio.TimeoutError, ProtocolError, Refused):
        return None


async def _partials(account, clients, counter, purpose, element):
    """Ask servers (t at a time, the next ones if some fail) to evaluate ``counter``; return
    {index: element} of valid partials, at most t. A partial with a wrong proof is named."""
    partials, cheaters = {}, []
    pending = list(clients)
    while len(partials) < account.threshold and pending:
        batch, pending = pending[:account.threshold - len(partials)], pending[account.threshold - len(partials):]
        replies = await asyncio.gather(*(_try(c.evaluate(account.name, counter, purpose)) for c in batch))
        for client, reply in zip(batch, replies):
            if reply is None:
                continue
            index = account.index_of(client.name)
            if reply.index != index or not account.check_partial(index, counter, element, reply.element, reply.proof):
                cheaters.append(client.name)
                continue
            partials[index] = reply.element
    return partials, cheaters


def _clients_of(cluster, account, prefer=()):
    """The account's share servers, those named in ``prefer`` first (in that order)."""
    names = [n for n in prefer if n in account.server_names]
    names += [n for n in account.server_names if n not in names]
    return [cluster.server(name) for name in names]


async def issue(cluster, account_name, principal, credential, *, prefer=(), timeout=10.0):
    """The device's next OTP: (otp, counter, names of the servers that answered, cheaters).
    ``prefer``: share servers to ask first."""
    account = cluster.account(account_name)
    async with Session(_clients_of(cluster, account, prefer), principal, credential, timeout=timeout) as session:
        return await issue_with(session.clients, account)


async def issue_with(clients, account):
    """``issue`` over open, authenticated ShareClients (asked in list order)."""
    clients = [c for c in clients if c.name in account.server_names]
    if len(clients) < account.threshold:
        raise Refused(f"only {len(clients)} of the t = {account.threshold} share servers needed are reachable")
    statuses = await asyncio.gather(*(_try(c.status(account.name)) for c in clients[:account.threshold]))
    watermarks = [s[0] for s in statuses if s is not None]
    if not watermarks:
        raise Refused("no share server answered")
    counter = max(watermarks)
    element = account.element(counter)
    partials, cheaters = await _partials(account, clients, counter, ISSUE, element)
    if len(partials) < account.threshold:
        raise Refused(f"only {len(partials)} valid partials of the t = {account.threshold} needed")
    answered = [account.server_names[i - 1] for i in sorted(partials)]
    return account.otp(counter, partials), counter, answered, cheaters


async def verify(cluster, account_name, otp, principal, credential, *, prefer=(), timeout=10.0):
    """The verifier's check: (accepted, servers that gave valid partials - on a rejection
    those of the last counter tried -, cheaters). Refused when fewer than t servers are
    reachable (nothing consumed then). ``prefer``: share servers to ask first for partials."""
    account = cluster.account(account_name)
    async with Session(_clients_of(cluster, account, prefer), principal, credential, timeout=timeout) as session:
        return await verify_with(session.clients, account, otp)


async def verify_with(clients, account, otp):
    """``verify`` over open, authenticated ShareClients (asked in list order)."""
    clients = [c for c in clients if c.name in account.server_names]
    if len(clients) < account.threshold:
        raise Refused(f"only {len(clients)} of the t = {account.threshold} share servers needed are reachable")
    statuses = await asyncio.gather(*(_try(c.status(account.name)) for c in clients))
    if sum(s is not None for s in statuses) < account.threshold:
        raise Refused("fewer than t share servers answered")
    candidates = sorted({c for s in statuses if s is not None for c in s[1]}, reverse=True)[:VERIFY_CANDIDATES]
    all_cheaters, answered = [], []
    for counter in candidates:
        partials, cheaters = await _partials(account, clients, counter, VERIFY, account.element(counter))
        all_cheaters += cheaters
        answered = [account.server_names[i - 1] for i in sorted(partials)]
        if len(partials) < account.threshold:
            continue
        ok = account.matches(counter, partials, otp)
        if ok or counter == candidates[-1]:
            by_name = {c.name: c for c in clients}
            await asyncio.gather(*(_try(by_name[n].outcome(account.name, counter, ok)) for n in answered))
        if ok:
            return True, answered, all_cheaters
    return False, answered, all_cheaters


class TprfGateway:
    """A front end's verifier for tprf tokens (the HTTPS /validate API): the accounts of a
    cluster file are verified by gathering t partials as verifier ``principal``."""

    def __init__(self, cluster, principal, credential, *, timeout=10.0):
        self.cluster = cluster
        self.principal = principal
        self._credential = credential
        self.timeout = timeout

    def account_of(self, user=None, serial=None):
        """The account name for a user or token serial this gateway verifies, else None."""
        if user is not None:
            return user if user in self.cluster.accounts else None
        for name, entry in self.cluster.accounts.items():
            if hmac.compare_digest(entry["serial"].encode(), serial.encode()):
                return name
        return None

    def serial(self, account):
        return self.cluster.accounts[account]["serial"]

    async def verify(self, account, otp):
        """True if accepted; Refused when fewer than t share servers answer."""
        ok, _answered, cheaters = await verify(self.cluster, account, otp, self.principal, self._credential,
                                               timeout=self.timeout)
        for name in cheaters:
            log.warning("share server %s sent a partial with a wrong proof (ignored)", name)
        return ok


# -- the DKG --------------------------------------------------------------------------------
class CeremonyFailed(Refused):
    """The DKG aborted; the message names the share servers at fault and the evidence."""


async def run_dkg(cluster, server_names, account_name, threshold, principal, credential, *,
                  digits=6, serial=None, timeout=30.0):
    """Run the DKG among ``server_names`` (index order); return the account's cluster-file
    entry, the signed transcript (bytes, {index: signature}) and the accusations
    ({dealer name: [evidence]}) - an accused dealer is excluded, the ceremony completes if
    at least t dealers qualify."""
    from ..store import new_serial

    servers = [cluster.server(name) for name in server_names]
    if not tprfdkg.quorum_ok(threshold, len(servers)):
        raise CeremonyFailed(f"threshold {threshold} of {len(servers)} servers: need n/2 < t <= n "
                             f"and 2 <= n <= {tprfdkg.MAX_SERVERS}")
    serial = serial or new_serial()
    clients = []
    try:
        for server in servers:
            client = await connect_share(server, timeout=timeout)
            clients.append(client)
        pems = [await c.public_key() for c in clients]
        await asyncio.gather(*(c.authenticate(principal, credential) for c in clients))
        setup_body = tprfdkg.new_setup(account_name, serial, threshold,
                                       [(c.fingerprint, pem) for c, pem in zip(clients, pems)])
        setup = tprfdkg.parse(setup_body)

        async def step(round_, body):
            try:
                return await asyncio.gather(*(c.ceremony(account_name, round_, body) for c in clients))
            except Refused:
                raise CeremonyFailed(f"a share server refused round {round_} (see its log)") from None
            except LocalProtocolError:
                raise CeremonyFailed(f"round {round_} does not fit one frame: use fewer share servers or "
                                     "smaller RSA keys (otpfast init --rsa-bits 3072)") from None

        dealings = tprfdkg.dealings_body(setup, await step(tprfdkg.SETUP, setup_body))
        complaints = await step(tprfdkg.DEALINGS, dealings)
        try:
            accused, qualified = tprfdkg.qualify(setup, complaints, dealings)
        except Refused as exc:
            raise CeremonyFailed(str(exc)) from None
        read = tprfdkg.read_dealings(setup, tprfdkg.parse(dealings))
        commitments = {j: cs for j, cs, _d in read if cs is not None}
        named = {server_names[j - 1]: _named_evidence(evidence, commitments.get(j), server_names)
                 for j, evidence in accused.items()}
        if len(qualified) < threshold:
            raise CeremonyFailed(f"only {len(qualified)} dealers qualified (t = {threshold}); accused: "
                                 + "; ".join(f"{n}: {e}" for n, e in named.items()))
        public = tprfdkg.public_result(threshold, len(servers), commitments, qualified)
        transcript = tprfdkg.transcript_body(setup, dealings, commitments, complaints, accused, qualified, public)
        signed = await step(tprfdkg.FINISH, transcript)
        signatures = {}
        for server, (body, signature) in zip(setup["servers"], signed):
            if not tprfdkg.signed_by(server["key"], tprfdkg.FINISH, transcript, signature):
                raise CeremonyFailed(f"{server_names[server['index'] - 1]} did not sign the transcript")
            signatures[str(server["index"])] = signature.hex()
        await step(tprfdkg.CONFIRM, tprfdkg.canonical({"signatures": signatures}))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    entry = {"serial": serial, "threshold": threshold, "digits": digits, "servers": list(server_names),
             "public": public, "transcript": tprfdkg.digest(transcript)}
    return entry, (transcript, signatures), named


def _named_evidence(evidence, commitments, names):
    """Accusations in words; each revealed share is checked against the dealer's signed
    commitments here too (a share that does check out makes the accuser the liar)."""
    from .. import tprf

    out = []
    for item in evidence:
        accuser = names[item["by"] - 1]
        share = item.get("share")
        if share and commitments is not None:
            try:
                holds = tprf.verify_share(item["by"], bytes.fromhex(share), commitments)
            except ValueError:       # not hex, or not a scalar (TprfError is a ValueError)
                holds = False
            if holds:
                out.append(f"{accuser} accused falsely (its revealed share matches the commitments)")
                continue
        out.append(f"{accuser}: {item['reason']}" + (f" (revealed share {share[:16]}...)" if share else ""))
    return out


__all__ = ["ShareClient", "connect_share", "Session", "issue", "issue_with", "verify", "verify_with", "run_dkg",
           "CeremonyFailed", "TprfGateway"]
