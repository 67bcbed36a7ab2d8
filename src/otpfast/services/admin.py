"""Administration: authorities, clients and accounts (what the admin CLI commands call).

Credentials are returned once and stored only as a hash. (The clients table's mask key column
is filled with random bytes and no longer read: since protocol v2 each connection's responses
are masked with that connection's session key, services/masking.py.)
"""
import secrets
import time
from typing import Iterator

from otpfast.errors import Conflict, InvalidParameter, NotFound
from otpfast.hotp import validate_key
from otpfast.store import (ACCOUNT_ACTIVE, AccountRecord, AuditEntry, AuthorityRecord,
                           ClientRecord, Store)

from . import audit, credentials, policy, tokens
from .derivation import SECRET_BYTES


class Admin:
    """``source``/``client``: who acts, for the audit entries (the CLI: "cli"; the admin
    API: the peer address and the admin client's name)."""

    def __init__(self, store: Store, *, clock=time.time, source: str = "cli",
                 client: str = "-"):
        self.store = store
        self.clock = clock
        self.source = source
        self.client = client

    def _audit(self, tx, now, what: str, account: str = "-", client: str | None = None):
        tx.audit(now, audit.ADMIN, account, client or self.client, self.source, what)

    def add_authority(self, authority_id: int) -> str:
        if isinstance(authority_id, bool) or not isinstance(authority_id, int) \
                or not 1 <= authority_id < 2**31:
            raise InvalidParameter("id", "must be an integer from 1 to 2**31-1")
        credential = credentials.new_credential()
        now = self.clock()
        with self.store.transaction() as tx:
            if not tx.add_authority(authority_id, credentials.credential_hash(credential), now):
                raise Conflict("id", f"authority {authority_id} exists already")
            self._audit(tx, now, "authority-added", client=f"authority:{authority_id}")
        return credential

    def add_client(self, name: str, *, account: str | None = None, verifier: bool = False,
                   admin: bool = False) -> str:
        """A device (``account``), a verifier, an admin (may call the admin API) or a
        verifier that is also an admin; its credential, returned once."""
        policy.validate_name(name, "name")
        if (account is None) == (not (verifier or admin)):
            raise InvalidParameter("account", "give exactly one of --account A or "
                                   "--verifier/--admin")
        if account is not None and self.store.account(account) is None:
            raise NotFound("account", f"no account named {account!r}")
        credential = credentials.new_credential()
        now = self.clock()
        with self.store.transaction() as tx:
            if not tx.add_client(name, account, verifier, credentials.credential_hash(credential),
                                 now, admin=admin):
                raise Conflict("name", f"client {name!r} exists already")
            self._audit(tx, now, "client-added", account=account or "-", client=name)
        return credential

    def add_account(self, name: str, type: str, *, secret: bytes | None = None,
                    **settings) -> AccountRecord:
        """Create an account. With ``authorities`` it waits for its ceremony; with
        ``secret`` (hotp/totp: an existing device's key, used as is) or without (from the
        CSPRNG now) it is active. Settings: see policy.account_params."""
        policy.validate_name(name, "name")
        params = policy.account_params(type, **settings)
        if secret is not None:
            if type not in ("hotp", "totp") or params["authorities"]:
                raise InvalidParameter("secret-file", "an existing secret goes only with a "
                                       "hotp or totp account without --authorities")
            try:
                validate_key(secret)
            except InvalidParameter as exc:
                raise InvalidParameter("secret-file", exc.message) from None
        for authority_id in params["authorities"]:
            if self.store.authority(authority_id) is None:
                raise InvalidParameter("authorities", f"authority {authority_id} is not "
                                       f"registered (otpfast authority add {authority_id})")
        material = chain_last = None
        counter = 0
        if secret is not None:
            material = {"key": bytes(secret).hex()}
        elif not params["authorities"]:
            material, chain_last, counter = tokens.derive_material(
                type, params, secrets.token_bytes(SECRET_BYTES))
        now = self.clock()
        with self.store.transaction() as tx:
            if not tx.add_account(name, type, params, material, chain_last, now, counter=counter):
                raise Conflict("name", f"account {name!r} exists already")
            self._audit(tx, now, f"account-added:{type}", account=name)
            # devices left bound to this name by a deletion before otpfast revoked them
            for client in tx.delete_clients_of(name):
                self._audit(tx, now, "client-deleted", account=name, client=client)
        return self.store.account(name)

    def accounts(self) -> list[AccountRecord]:
        return self.store.accounts()

    def account(self, name: str) -> AccountRecord:
        record = self.store.account(name)
        if record is None:
            raise NotFound("name", f"no account named {name!r}")
        return record

    def unlock(self, name: str) -> None:
        """Lift any lock and forget the failures and the back-off."""
        now = self.clock()
        with self.store.transaction() as tx:
            if not tx.unlock(name):
                raise NotFound("name", f"no account named {name!r}")
            self._audit(tx, now, "account-unlocked", account=name)

    def lock(self, name: str) -> None:
        """Lock an account for good (until :meth:`unlock`)."""
        now = self.clock()
        with self.store.transaction() as tx:
            if not tx.lock(name):
                raise NotFound("name", f"no account named {name!r}")
            self._audit(tx, now, "account-locked", account=name)

    def delete(self, name: str) -> list[str]:
        """Delete an account and, in the same transaction, the device clients bound to it
        (a later account of the same name is not served to them); their names."""
        now = self.clock()
        with self.store.transaction() as tx:
            if not tx.delete_account(name):
                raise NotFound("name", f"no account named {name!r}")
            self._audit(tx, now, "account-deleted", account=name)
            revoked = tx.delete_clients_of(name)
            for client in revoked:
                self._audit(tx, now, "client-deleted", account=name, client=client)
        return revoked

    def enrollment_uri(self, name: str, *, issuer: str = "otpfast") -> str:
        """The otpauth:// URI of a hotp/totp account (contains the secret: show it only to
        the user enrolling)."""
        from otpfast import keyuri

        record = self.account(name)
        if record.type not in ("hotp", "totp"):
            raise InvalidParameter("name", f"{record.type} accounts cannot be enrolled in an "
                                   "authenticator app (hotp/totp only)")
        if record.state != ACCOUNT_ACTIVE:
            raise InvalidParameter("name", "the account is waiting for its key ceremony")
        now = self.clock()
        with self.store.transaction() as tx:
            self._audit(tx, now, "enrolment-shown", account=name)
        return keyuri.build_uri(record.type, bytes.fromhex(record.material["key"]), name,
                                issuer=issuer, algorithm=record.params["algorithm"],
                                digits=record.params["digits"],
                                period=record.params.get("period", 30), counter=record.counter)

    # -- the admin's everyday tools: clients, authorities, the audit log ----------------
    def clients(self) -> list[ClientRecord]:
        return self.store.client_list()

    def delete_client(self, name: str) -> None:
        now = self.clock()
        with self.store.transaction() as tx:
            record = tx.delete_client(name)
            if record is None:
                raise NotFound("name", f"no client named {name!r}")
            self._audit(tx, now, "client-deleted", account=record.account or "-", client=name)

    def rotate_client(self, name: str) -> str:
        """A new credential for client ``name`` (returned once); the old one stops working
        at once (the row is replaced in one transaction: same account and roles)."""
        credential = credentials.new_credential()
        now = self.clock()
        with self.store.transaction() as tx:
            old = tx.delete_client(name)
            if old is None:
                raise NotFound("name", f"no client named {name!r}")
            if not tx.add_client(name, old.account, old.verifier,
                                 credentials.credential_hash(credential), now, admin=old.admin):
                raise InvalidParameter("name", f"client {name!r} could not be replaced")
            self._audit(tx, now, "client-rotated", account=old.account or "-", client=name)
        return credential

    def authorities(self) -> list[AuthorityRecord]:
        return self.store.authority_list()

    def delete_authority(self, authority_id: int) -> None:
        """Refused while a pending account still waits for this authority's phrase."""
        waiting = [a.name for a in self.store.accounts()
                   if a.state != ACCOUNT_ACTIVE and authority_id in a.authorities]
        if waiting:
            raise InvalidParameter("id", f"accounts wait for authority {authority_id}'s "
                                   f"contribution: {', '.join(waiting)} (delete them first)")
        now = self.clock()
        with self.store.transaction() as tx:
            if not tx.delete_authority(authority_id):
                raise NotFound("id", f"no authority {authority_id}")
            self._audit(tx, now, "authority-deleted", client=f"authority:{authority_id}")

    def audit_entries(self, *, account: str | None = None, since: float | None = None,
                      result: str | None = None) -> Iterator[dict]:
        """The audit log, oldest first, as :func:`describe_entry` dicts: only ``account``'s
        entries, those at or after ``since`` (epoch seconds), those whose outcome starts
        with ``result``. Streamed (memory stays bounded)."""
        for entry, intact in self.store.checked_audit_entries():
            if ((account is None or entry.account == account)
                    and (since is None or entry.time >= since)
                    and (result is None or entry.outcome.startswith(result))):
                yield describe_entry(entry, intact)


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def describe_client(record: ClientRecord) -> dict:
    """Non-secret facts about a client (``client list --json``); role: device, verifier,
    admin or verifier+admin."""
    role = "+".join(name for name, flag in (("verifier", record.verifier),
                                            ("admin", record.admin)) if flag) or "device"
    return {"name": record.name, "role": role, "account": record.account,
            "created": _utc(record.created_at)}


def describe_authority(record: AuthorityRecord) -> dict:
    return {"id": record.id, "created": _utc(record.created_at)}


def describe_entry(entry: AuditEntry, intact: bool) -> dict:
    """One audit entry (``audit list --json``): ``source`` is the peer address, ``outcome``
    the result with its reason (e.g. rejected:locked); ``intact``: its MAC chains onto the
    entry before it."""
    return {"seq": entry.seq, "time": _utc(entry.time), "epoch": entry.time,
            "event": entry.event, "account": entry.account, "client": entry.client,
            "source": entry.source, "outcome": entry.outcome, "intact": intact}


def locked_until(record: AccountRecord, now: float) -> str:
    """"permanent", the UTC time a temporary lock ends, or "-"."""
    if record.locked:
        return "permanent"
    if record.locked_at(now):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.locked_until))
    return "-"


def describe(record: AccountRecord, now: float) -> dict:
    """Non-secret facts about an account at ``now``, for ``account list/show``: failures
    as they count now (after leaking), the lock and the back-off level (locks in a row)."""
    failures, _ = policy.leaked(record.failures, record.failed_at, now)
    info = {"name": record.name, "type": record.type, "state": record.state,
            "failures": failures, "locked": record.locked_at(now),
            "locked_until": locked_until(record, now), "lock_level": record.locks,
            "lockout_policy": policy.DEFAULT_LOCKOUT_POLICY}
    # (not the PIN's hash, nor the flag saying verification reads the user's tokens)
    info.update({k: v for k, v in record.params.items() if k not in ("pin", "tokens")})
    info["pin"] = "pin" in record.params
    if record.type in policy.SERVER_ISSUED or record.type == "hotp":
        info["counter"] = record.counter
    if record.type == "totp":
        info["last_step"] = record.last_step
    if record.type == "hashchain":
        info["uses_left"] = tokens.uses_left(record)
    if record.transcript is not None:
        info["transcript"] = record.transcript.hex()
    return info
