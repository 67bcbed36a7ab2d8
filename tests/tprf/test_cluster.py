"""Issue and verify through share servers: quorums, exactly-once, killed servers."""
import asyncio
import random

import pytest

from otpfast import tprf as tprf_math
from otpfast.errors import Refused
from otpfast.net import tprf
from otpfast.store.shares import ISSUE, VERIFY


def test_cluster_issue_verify_replay(harness):
    async def scenario(h):
        entry, (_transcript, signatures), accused = await h.dkg()
        assert accused == {} and len(signatures) == 5
        otp, counter, answered, cheaters = await h.issue(["s1", "s2", "s3"])
        assert (counter, answered, cheaters) == (0, ["s1", "s2", "s3"], [])
        assert len(otp) == 6 and otp.isdigit()
        ok, answered, _ = await h.verify(otp, ["s3", "s4", "s5"])
        assert ok and answered == ["s3", "s4", "s5"]
        for quorum in (["s1", "s2", "s3"], ["s1", "s2", "s4"], ["s4", "s5", "s1"]):
            assert (await h.verify(otp, quorum))[0] is False
        otp2, counter2, _, _ = await h.issue(["s4", "s5", "s1"])
        assert counter2 == 1
        assert (await h.verify(otp2, ["s1", "s2", "s3"]))[0] is True
    harness(scenario)


def test_cluster_any_t_of_n_give_the_same_otp(harness):
    """Combining any t of the n partials gives the same OTP (the verifier accepts it through
    any quorum)."""
    async def scenario(h):
        await h.dkg()
        account = h.cluster.account("alice")
        async with tprf.Session(h.cluster.servers, "login-a", h.verifiers["login-a"]) as session:
            element = account.element(7)
            partials = {}
            for client in session.clients:
                reply = await client.evaluate("alice", 7, VERIFY)
                assert account.check_partial(reply.index, 7, element, reply.element, reply.proof)
                partials[reply.index] = reply.element
        import itertools
        otps = {account.otp(7, {i: partials[i] for i in subset}) for subset in itertools.combinations(partials, 3)}
        assert len(otps) == 1
    harness(scenario)


def test_cluster_wrong_otp_consumes_the_counter(harness):
    async def scenario(h):
        await h.dkg()
        otp, _, _, _ = await h.issue()
        wrong = otp[:-1] + ("1" if otp[-1] == "0" else "0")
        assert (await h.verify(wrong))[0] is False
        assert (await h.verify(otp))[0] is False      # consumed by the wrong attempt
        otp2, counter2, _, _ = await h.issue()
        assert counter2 == 1 and (await h.verify(otp2))[0] is True
    harness(scenario)


def test_cluster_race_of_one_otp_exactly_one_accept(harness):
    """Verifiers on different quorums race one OTP: exactly one accepts, every round."""
    quorums = [["s1", "s2", "s3"], ["s3", "s4", "s5"], ["s5", "s1", "s2"], ["s2", "s4", "s5"]]

    async def scenario(h):
        await h.dkg()
        rng = random.Random(7)
        for _round in range(8):
            otp, _, _, _ = await h.issue(rng.sample(h.local.names, 3))
            chosen = rng.sample(quorums, 3)
            results = await asyncio.gather(*(h.verify(otp, q, verifier=("login-a", "login-b")[i % 2])
                                             for i, q in enumerate(chosen)))
            assert sum(ok for ok, _, _ in results) == 1, results
    harness(scenario)


def test_cluster_killed_servers_never_double_accept(harness):
    """Share servers killed (and restarted) at random points while verifiers race: never two
    accepts of one OTP, never an accept without t valid partials."""
    async def scenario(h):
        await h.dkg()
        rng = random.Random(11)
        accepted_total = 0
        for _round in range(6):
            alive = sorted(h.local.listeners)
            for name in h.local.names:
                if name not in alive:
                    await h.local.start(name)
            try:
                otp, _, _, _ = await h.issue(rng.sample(h.local.names, 3))
            except Refused:
                continue
            victims = rng.sample(h.local.names, rng.randint(1, 3))

            async def killer():
                await asyncio.sleep(rng.uniform(0, 0.02))
                for name in victims:
                    await h.local.stop(name)

            async def attempt(verifier):
                try:
                    return await h.verify(otp, rng.sample(h.local.names, 3), verifier=verifier)
                except Refused:
                    return (False, [], [])

            results = await asyncio.gather(attempt("login-a"), attempt("login-b"), killer())
            verdicts = results[:2]
            accepted = [r for r in verdicts if r[0]]
            assert len(accepted) <= 1, verdicts
            for ok, answered, _ in accepted:
                assert len(answered) >= 3
            accepted_total += len(accepted)
            # after everything is back, the OTP is never accepted again
            for name in h.local.names:
                if name not in h.local.listeners:
                    await h.local.start(name)
            if accepted:
                assert (await h.verify(otp))[0] is False
        return accepted_total
    harness(scenario)


def test_cluster_no_accept_and_no_issue_below_t(harness):
    async def scenario(h):
        await h.dkg()
        otp, _, _, _ = await h.issue()
        await h.local.stop("s1")
        await h.local.stop("s2")
        await h.local.stop("s3")
        with pytest.raises(Refused):
            await h.verify(otp)
        with pytest.raises(Refused):
            await h.issue()
        # nothing was consumed on the two that are up: back to a quorum, it verifies once
        await h.local.start("s1")
        assert (await h.verify(otp))[0] is True
        assert (await h.verify(otp))[0] is False
    harness(scenario)


def test_cluster_malicious_partial_detected_and_named(harness):
    """A share server that answers with a wrong partial is named; the device and the
    verifier go on with the honest ones."""
    from otpfast.services.shares import ShareServer

    class Lying(ShareServer):
        def evaluate(self, principal, account, counter, purpose):
            index, element, proof = super().evaluate(principal, account, counter, purpose)
            return index, tprf_math.element_add(element, tprf_math.hash_to_group(b"noise")), proof

    def lying(datadir):
        honest = datadir.share_server()
        return Lying(honest.store, datadir.rsa_private_key(), datadir.fingerprint())

    async def scenario(h):
        await h.dkg()
        otp, _, answered, cheaters = await h.issue(["s2", "s3", "s4"])
        assert cheaters == ["s2"] and "s2" not in answered and len(answered) == 3
        ok, answered, cheaters = await h.verify(otp, ["s2", "s1", "s5"])
        assert ok and cheaters == ["s2"] and "s2" not in answered
    harness(scenario, service_factory={"s2": lying})


def test_cluster_roles_enforced(harness):
    """A device cannot verify (consume) or get another account's partials; a verifier cannot
    issue; nothing is answered before authentication."""
    async def scenario(h):
        await h.dkg()
        server = h.cluster.servers[0]
        client = await tprf.connect_share(server)
        try:
            await client.public_key()                          # opens the conversation
            with pytest.raises(Refused):
                await client.evaluate("alice", 0, ISSUE)       # not authenticated: Error, closed
        finally:
            await client.aclose()
        for principal, credential, account, purpose in (
                ("phone", h.device, "alice", VERIFY), ("phone", h.device, "bob", ISSUE),
                ("login-a", h.verifiers["login-a"], "alice", ISSUE)):
            client = await tprf.connect_share(server)
            try:
                await client.authenticate(principal, credential)
                with pytest.raises(Refused):
                    await client.evaluate(account, 0, purpose)
            finally:
                await client.aclose()
        client = await tprf.connect_share(server)
        try:
            with pytest.raises(Refused):
                await client.authenticate("phone", h.verifiers["login-a"])   # wrong credential
        finally:
            await client.aclose()
    harness(scenario)


def test_cluster_issue_watermark(harness):
    """A share server evaluates a counter for issuing once, and only at or above its watermark."""
    async def scenario(h):
        await h.dkg()
        server = h.cluster.servers[0]
        client = await tprf.connect_share(server)
        try:
            await client.authenticate("phone", h.device)
            assert await client.evaluate("alice", 5, ISSUE) is not None
            assert await client.evaluate("alice", 5, ISSUE) is None
            assert await client.evaluate("alice", 3, ISSUE) is None
            assert (await client.status("alice")) == (6, [5])
            assert await client.evaluate("alice", 6, ISSUE) is not None
        finally:
            await client.aclose()
    harness(scenario)


def test_cluster_server_with_wrong_pin_is_not_used(harness):
    """A share server whose certificate does not match the cluster file is treated as down:
    never sent a login, never asked; the others carry on."""
    async def scenario(h):
        await h.dkg()
        h.cluster.server("s1")["pin"] = "sha256:" + "ab" * 32
        otp, _, answered, _ = await h.issue(["s1", "s2", "s3"])
        assert "s1" not in answered and len(answered) == 3
        async with tprf.Session(h.cluster.servers, "phone", h.device) as session:
            assert session.failed == ["s1"]
        assert (await h.verify(otp))[0] is True
    harness(scenario)
