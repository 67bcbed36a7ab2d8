"""``otpfast demo --threshold``: threshold OTPs on loopback - 5 share servers, t = 3, each with
its own temporary data directory, all in this process.

DKG -> a device combines an OTP from s1,s2,s3 -> the stores of s4 and s5 (t - 1) do not give
it -> a verifier accepts it through s2,s3,s4 ->
the replay is refused through every quorum -> s1 and s2 are killed and logins go on ->
s3 is killed too and logins stop. One line per step; exit 0 iff every step behaved.
"""
import asyncio
import tempfile

from otpfast.errors import Refused

N, T = 5, 3
ACCOUNT = "alice"
DEVICE = "alice-phone"
VERIFIER = "login-service"


async def _story(base, steps):
    from otpfast.net import tprf
    from otpfast.net.sharecluster import LocalCluster
    from otpfast.store.shares import VERIFY

    local = LocalCluster(base, N)
    local.init()
    steps.report(f"init: {N} share servers, each its own data dir, TLS key and RSA key", True)
    admin = local.add_admin()
    device = local.add_device(DEVICE, ACCOUNT)
    verifier = local.add_verifier(VERIFIER)
    steps.report("principals: admin, device, verifier (one credential each, derived per server)", True)
    async with local:
        cluster = local.cluster
        steps.report("serve: " + ", ".join(f"{n} on {a[0]}:{a[1]}" for n, a in local.addresses.items()), True)
        try:
            entry, (_transcript, signatures), accused = await tprf.run_dkg(cluster, local.names, ACCOUNT, T,
                                                                           "admin", admin)
        except Refused as exc:
            steps.report(f"DKG ({T} of {N}, joint-Feldman)", False, str(exc))
            return
        cluster.accounts[ACCOUNT] = entry
        steps.report(f"DKG ({T} of {N}, joint-Feldman): g^k = {entry['public']['key'][:16]}..., nobody holds k",
                     not accused, f"transcript signed by {len(signatures)} servers")

        async def issue(prefer):
            try:
                return await tprf.issue(cluster, ACCOUNT, DEVICE, device, prefer=prefer)
            except Refused as exc:
                return None, None, str(exc), []

        async def verify(otp, prefer):
            try:
                return await tprf.verify(cluster, ACCOUNT, otp, VERIFIER, verifier, prefer=prefer)
            except Refused as exc:
                return False, str(exc), []

        otp, counter, answered, _ = await issue(["s1", "s2", "s3"])
        if not steps.report(f"{DEVICE} gets an OTP from {','.join(answered) if otp else '-'} (DLEQ proofs checked)",
                            otp is not None and answered == ["s1", "s2", "s3"], f"{otp} (counter {counter})"):
            return
        steps.report("s4 and s5 stolen (stores + at-rest keys): 2 shares + a guess miss the OTP",
                     _stolen_miss(local, ["s4", "s5"], cluster.account(ACCOUNT), counter, otp))
        ok, answered, _ = await verify(otp, ["s2", "s3", "s4"])
        steps.report(f"{VERIFIER} verifies it through {','.join(answered)}: accepted", ok and answered ==
                     ["s2", "s3", "s4"], "each consumed the counter before answering")
        for quorum in (["s1", "s5", "s2"], ["s4", "s5", "s1"], ["s2", "s3", "s4"]):
            ok, answered, _ = await verify(otp, quorum)
            steps.report(f"replay through {','.join(quorum)}: refused", not ok,
                         f"{len(answered) if isinstance(answered, list) else 0} of the {T} partials needed")
        async with tprf.Session(cluster.servers, VERIFIER, verifier) as session:
            replies = [await client.evaluate(ACCOUNT, counter, VERIFY) for client in session.clients]
        steps.report(f"counter {counter} asked of each share server directly: refused by all {N}",
                     len(replies) == N and all(r is None for r in replies))
        wrong = otp[:-1] + ("1" if otp[-1] == "0" else "0")
        otp2, counter2, answered2, _ = await issue(["s5", "s4", "s1"])
        ok, _, _ = await verify(wrong, ["s1", "s4", "s5"])
        steps.report("a wrong OTP: refused (its counter consumed, the account's throttle charged)",
                     otp2 is not None and not ok)
        await local.stop("s1")
        await local.stop("s2")
        steps.report("s1 and s2 killed", True)
        otp3, counter3, answered3, _ = await issue([])
        ok, answered, _ = await verify(otp3, []) if otp3 else (False, [], [])
        steps.report(f"login goes on: OTP from {','.join(answered3) if otp3 else '-'}, accepted through "
                     f"{','.join(answered) if ok else '-'}", otp3 is not None and ok, f"{otp3} (counter {counter3})")
        await local.stop("s3")
        steps.report("s3 killed too: 2 of 5 left, t = 3", True)
        otp4, _, reason, _ = await issue([])
        steps.report("login stops: the device cannot get an OTP", otp4 is None, reason if otp4 is None else otp4)
        ok, reason, _ = await verify(otp3, [])
        steps.report("and no verifier can accept one", not ok, reason if isinstance(reason, str) else "")


def _partials_from_stores(local, names, account, element):
    """What a thief of these share servers' data directories computes: {index: H1(x)^{k_j}}."""
    from otpfast import tprf
    from otpfast.store.atrest import load_key
    from otpfast.store.shares import SHARES_FILE, ShareStore

    partials = {}
    for name in names:
        datadir = local.datadirs[name]
        store = ShareStore(datadir.file(SHARES_FILE), load_key(datadir.file("at-rest.key")))
        try:
            record = store.share(account.name)
        finally:
            store.close()
        partials[record.index] = tprf.evaluate(record.share, element)
    return partials


def _stolen_miss(local, names, account, counter, otp):
    """t-1 stolen shares plus a guessed one never give the PRF output behind ``otp`` (compared
    in full against the output of t real shares, so a lucky 6-digit collision does not count)."""
    from otpfast import tprf

    element = account.element(counter)
    stolen = _partials_from_stores(local, names, account, element)
    missing = next(i for i in range(1, len(local.names) + 1) if i not in stolen)
    guessed = {**stolen, missing: tprf.evaluate(tprf.random_scalar(), element)}
    real = _partials_from_stores(local, local.names[:account.threshold], account, element)
    truth = tprf.finalize(account.input(counter), tprf.combine(real))
    attempt = tprf.finalize(account.input(counter), tprf.combine(guessed))
    return tprf.otp_digits(truth, account.digits) == otp and attempt != truth


def run(steps, keep):
    import shutil

    import click

    base = tempfile.mkdtemp(prefix="otpfast-threshold-demo-")
    try:
        asyncio.run(_story(base, steps))
    finally:
        if keep:
            click.echo(f"data directories kept: {base}")
        else:
            shutil.rmtree(base)
