"""A share-server cluster on loopback for the tprf tests: ``run(cluster_factory, scenario)``."""
import asyncio

import pytest

from otpfast.net import tprf
from otpfast.net.sharecluster import LocalCluster

ACCOUNT = "alice"


class Harness:
    """A LocalCluster with an admin, a device and two verifiers, and helpers over net.tprf."""

    def __init__(self, base, n=5, t=3, service_factory=None):
        self.local = LocalCluster(str(base), n, service_factory=service_factory)
        self.local.init()
        self.t = t
        self.admin = self.local.add_admin()
        self.device = self.local.add_device("phone", ACCOUNT)
        self.verifiers = {name: self.local.add_verifier(name) for name in ("login-a", "login-b")}

    @property
    def cluster(self):
        return self.local.cluster

    async def dkg(self, account=ACCOUNT, t=None):
        entry, signed, accused = await tprf.run_dkg(self.cluster, self.local.names, account, t or self.t,
                                                    "admin", self.admin)
        self.cluster.accounts[account] = entry
        return entry, signed, accused

    async def issue(self, prefer=()):
        return await tprf.issue(self.cluster, ACCOUNT, "phone", self.device, prefer=prefer, timeout=5)

    async def verify(self, otp, prefer=(), verifier="login-a"):
        return await tprf.verify(self.cluster, ACCOUNT, otp, verifier, self.verifiers[verifier], prefer=prefer,
                                 timeout=5)


@pytest.fixture
def harness(tmp_path):
    """``harness(scenario, n=5, t=3, service_factory=None)``: run ``await scenario(h)`` with
    the cluster serving."""
    def run(scenario, **kwargs):
        h = Harness(tmp_path, **kwargs)

        async def main():
            async with h.local:
                return await scenario(h)
        return asyncio.run(main())
    return run
