"""n share servers on loopback in this process, each with its own data directory (``otpfast
demo --threshold``, the tests and the benchmark): ``async with LocalCluster(base, n) as
cluster``; ``stop(name)`` kills one (listener and connections closed, store closed) and
``start(name)`` brings it back on the same data directory.
"""
import os

from ..datadir import DataDir
from ..services import credentials
from ..services.tprfcluster import Cluster, server_credential
from ..store.shares import ADMIN, DEVICE, VERIFIER
from . import tls
from .shares import serve_shares


class LocalCluster:
    def __init__(self, base, n, *, rsa_bits=2048, synchronous="FULL", service_factory=None):
        self.base = base
        self.names = [f"s{i}" for i in range(1, n + 1)]
        self.rsa_bits = rsa_bits
        self.synchronous = synchronous
        self.datadirs = {name: DataDir(os.path.join(base, name)) for name in self.names}
        self.services = {}
        self.listeners = {}
        self.addresses = {}
        # name -> callable(datadir) -> ShareServer (a test's malicious server)
        self.service_factory = service_factory or {}
        self.cluster = None

    def init(self):
        """Create the data directories (TLS certificate, at-rest key, RSA key); each server
        pins the others as its DKG peers."""
        servers = []
        for name, datadir in self.datadirs.items():
            if not datadir.initialised:
                datadir.init(rsa_bits=self.rsa_bits)
            servers.append({"name": name, "address": "", "pin": datadir.fingerprint()})
        self.cluster = Cluster(servers, path=os.path.join(self.base, "cluster.json"))
        services = {name: datadir.share_server(synchronous=self.synchronous)
                    for name, datadir in self.datadirs.items()}
        try:
            for service in services.values():
                for peer in services.values():
                    if peer is not service:
                        service.add_peer(peer.key_id)
        finally:
            for service in services.values():
                service.close()

    def add_principal(self, name, role, *, account=None, credential=None):
        """Register ``name`` on every share server (the per-server credential derived from one
        cluster credential); return the cluster credential."""
        credential = credential or credentials.new_credential()
        for server_name, datadir in self.datadirs.items():
            service = self.services.get(server_name)
            own = service is None
            if own:
                service = datadir.share_server(synchronous=self.synchronous)
            try:
                service.add_principal(name, role, account=account,
                                      credential=server_credential(credential, datadir.fingerprint()))
            finally:
                if own:
                    service.close()
        return credential

    def add_admin(self, name="admin"):
        return self.add_principal(name, ADMIN)

    def add_device(self, name, account):
        return self.add_principal(name, DEVICE, account=account)

    def add_verifier(self, name):
        return self.add_principal(name, VERIFIER)

    async def start(self, name):
        datadir = self.datadirs[name]
        factory = self.service_factory.get(name)
        service = factory(datadir) if factory else datadir.share_server(synchronous=self.synchronous)
        port = self.addresses.get(name, ("127.0.0.1", 0))[1]
        listener = await serve_shares(service, tls.server_context(datadir), "127.0.0.1", port)
        self.services[name] = service
        self.listeners[name] = listener
        self.addresses[name] = listener.address
        for server in self.cluster.servers:
            if server["name"] == name:
                server["address"] = "%s:%d" % listener.address
        return listener

    async def stop(self, name):
        listener = self.listeners.pop(name)
        listener.close()
        await listener.wait_closed()
        self.services.pop(name).close()

    async def __aenter__(self):
        if self.cluster is None:
            self.init()
        for name in self.names:
            await self.start(name)
        return self

    async def __aexit__(self, *exc_info):
        for name in list(self.listeners):
            await self.stop(name)
