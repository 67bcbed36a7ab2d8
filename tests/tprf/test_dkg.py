"""The DKG: honest result, a cheating dealer named with evidence and excluded, an abort when
fewer than t dealers qualify, t-1 stores read directly cannot produce the OTP."""
import itertools

import pytest

from otpfast import tprf as tprf_math
from otpfast.errors import Refused
from otpfast.net import tprf
from otpfast.services import tprfdkg
from otpfast.services.shares import ShareServer
from otpfast.store.shares import SHARES_FILE, ShareStore
from otpfast.store.atrest import load_key


def _shares_from_stores(h, names, account="alice"):
    """What a thief of these share servers' data directories (store and at-rest key) holds."""
    out = {}
    for name in names:
        datadir = h.local.datadirs[name]
        store = ShareStore(datadir.file(SHARES_FILE), load_key(datadir.file("at-rest.key")))
        try:
            record = store.share(account)
        finally:
            store.close()
        out[record.index] = record.share
    return out


def test_dkg_shares_interpolate_to_one_key(harness):
    async def scenario(h):
        entry, (transcript, signatures), accused = await h.dkg()
        assert accused == {}
        shares = _shares_from_stores(h, h.local.names)
        public = bytes.fromhex(entry["public"]["key"])
        for subset in itertools.combinations(sorted(shares), 3):
            k = tprf_math.recover_secret({i: shares[i] for i in subset})
            assert tprf_math.public_key(k) == public
        for i, share in shares.items():
            assert tprf_math.public_key(share).hex() == entry["public"]["shares"][str(i)]
        # every server signed the same transcript, and each keeps all signatures
        setup = tprfdkg.parse(transcript)["setup"]
        for server in setup["servers"]:
            assert tprfdkg.signed_by(server["key"], tprfdkg.FINISH, transcript,
                                     bytes.fromhex(signatures[str(server["index"])]))
        for service in h.local.services.values():
            record = service.store.share("alice")
            assert record.active and record.transcript == transcript and record.signatures == signatures
    harness(scenario)


def _cheating_dealer(victims):
    """A share server whose dealing gives ``victims`` a share that misses its commitments."""
    class Cheater(ShareServer):
        def _dealing(self, setup, me):
            body, polynomial = tprfdkg.deal(setup, me)
            dealing = tprfdkg.parse(body)
            for victim in victims:
                server = setup["servers"][victim - 1]
                bad = tprf_math.scalar_add(tprf_math.poly_eval(polynomial, victim), tprf_math.scalar_from_int(1))
                dealing["shares"][str(victim)] = tprfdkg.encrypt_share(
                    server["key"], bad, setup["ceremony"], setup["account"], me, victim).hex()
            return tprfdkg.canonical(dealing)

    def factory(datadir):
        honest = datadir.share_server()
        return Cheater(honest.store, datadir.rsa_private_key(), datadir.fingerprint())
    return factory


def test_dkg_cheating_dealer_named_with_evidence_and_excluded(harness):
    async def scenario(h):
        entry, (transcript, _signatures), accused = await h.dkg()
        assert list(accused) == ["s4"]
        assert any("s2: share-does-not-match-commitments" in e for e in accused["s4"])
        body = tprfdkg.parse(transcript)
        assert body["qualified"] == [1, 2, 3, 5]
        evidence = body["accused"]["4"][0]
        # the evidence checks out against s4's signed commitments
        commitments = [bytes.fromhex(c) for c in body["commitments"]["4"]]
        assert evidence["by"] == 2
        assert not tprf_math.verify_share(2, bytes.fromhex(evidence["share"]), commitments)
        # s4 still holds a share (of the qualified dealers' polynomials): logins work through it
        otp, _, answered, cheaters = await h.issue(["s4", "s2", "s5"])
        assert answered == ["s2", "s4", "s5"] and cheaters == []
        assert (await h.verify(otp, ["s1", "s3", "s4"]))[0] is True
    harness(scenario, service_factory={"s4": _cheating_dealer([2])})


def test_dkg_aborts_when_fewer_than_t_dealers_qualify(harness):
    async def scenario(h):
        with pytest.raises(tprf.CeremonyFailed) as failure:
            await h.dkg()
        message = str(failure.value)
        assert "only 2 dealers qualified" in message and "s1" in message and "s2" in message
        for service in h.local.services.values():
            assert service.store.share("alice") is None
    factory = _cheating_dealer([3])
    harness(scenario, service_factory={"s1": factory, "s2": factory, "s4": _cheating_dealer([5])}, n=5, t=3)


def test_dkg_t_minus_1_stores_cannot_produce_the_otp(harness):
    """t-1 shares read straight from t-1 stores, combined with a guessed one, never give the
    OTP's PRF output (1,000 counters); t shares do."""
    async def scenario(h):
        await h.dkg()
        return _shares_from_stores(h, h.local.names)
    shares = harness(scenario)
    account = "alice"
    stolen = {1: shares[1], 2: shares[2]}
    matches = 0
    for counter in range(1000):
        x = tprfdkg.evaluation_input(account, "S", counter)
        element = tprf_math.hash_to_group(x)
        truth = tprf_math.finalize(x, tprf_math.combine({i: tprf_math.evaluate(shares[i], element) for i in (1, 2, 3)}))
        guess = dict(stolen)
        guess[3] = tprf_math.random_scalar()
        partials = {i: tprf_math.evaluate(s, element) for i, s in guess.items()}
        attempt = tprf_math.finalize(x, tprf_math.combine(partials))
        matches += attempt == truth
    assert matches == 0


def test_dkg_refuses_bad_thresholds(harness):
    async def scenario(h):
        for t in (1, 2, 6):
            with pytest.raises(Refused):
                await h.dkg(t=t)
    harness(scenario)


def test_dkg_roster_with_an_unpinned_server_is_refused(harness):
    """An admin that slips a share server of its own (its RSA key) into the roster gets no
    dealing: every share server pins its peers (LocalCluster pins them all)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    async def scenario(h):
        fake = tprfdkg.public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        clients = [await tprf.connect_share(server) for server in h.cluster.servers]
        try:
            pems = [await c.public_key() for c in clients]
            roster = [(c.fingerprint, pem) for c, pem in zip(clients, pems)]
            roster[4] = ("sha256:" + "ee" * 32, fake)
            setup = tprfdkg.new_setup("alice", "S1", 3, roster)
            await clients[0].authenticate("admin", h.admin)
            with pytest.raises(Refused):
                await clients[0].ceremony("alice", tprfdkg.SETUP, setup)
        finally:
            for c in clients:
                await c.aclose()
    harness(scenario)


def test_dkg_complaints_of_every_server_required():
    setup = {"ceremony": "c" * 32, "servers": [{"index": 1, "key": "k"}, {"index": 2, "key": "k"}]}
    with pytest.raises(Refused):
        tprfdkg.qualify(setup, [(b"{}", b"sig")], b"dealings")


def test_dkg_unconfirmed_ceremony_can_be_run_again(harness, monkeypatch):
    """An orchestrator that dies before round 4 leaves pending shares (never evaluated); a
    new DKG for the account replaces them. An active share is never replaced."""
    async def scenario(h):
        original = tprf.ShareClient.ceremony

        async def no_confirm(self, account, round_, body):
            if round_ == tprfdkg.CONFIRM:
                raise OSError("the orchestrator died")
            return await original(self, account, round_, body)

        monkeypatch.setattr(tprf.ShareClient, "ceremony", no_confirm)
        with pytest.raises(OSError):
            await h.dkg()
        monkeypatch.setattr(tprf.ShareClient, "ceremony", original)
        assert all(not s.store.share("alice").active for s in h.local.services.values())
        await h.dkg()
        otp, _, _, _ = await h.issue()
        assert (await h.verify(otp))[0] is True
        with pytest.raises(Refused):
            await h.dkg()
    harness(scenario)


def test_dkg_round_too_large_for_a_frame_fails_cleanly(harness, monkeypatch):
    from otpfast.protocol import messages

    monkeypatch.setattr(messages.CeremonyStep, "FIELDS", (("account", "str", 128), ("round", "u32", 1),
                                                          ("body", "bytes", 2000)))

    async def scenario(h):
        with pytest.raises(tprf.CeremonyFailed, match="does not fit one frame"):
            await h.dkg()
    harness(scenario)
