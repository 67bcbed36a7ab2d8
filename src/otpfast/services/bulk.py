"""Tokens in bulk: import (PSKC, OATH CSV, otpauth:// URIs), PSKC export, and enrolling many
users at once (what ``otpfast token import|export`` and ``account add-many`` call).

Each import or enrolment is ONE transaction: every token or user, or none.

Import: a token goes to the user the file names (PSKC ``<UserId>``, the CSV's user column,
a URI's account label), else to ``user`` (``--user``). A user that does not exist is
created, and its first imported token becomes its main token (the account row holds its
secret and state, as ``account add`` would); the user's other imported tokens are further
tokens. A serial that the store holds already refuses the whole import. An imported TOTP
token's T0 (a whole number of steps) is kept as a clock drift: step(now) = (now - T0) /
period = now / period + drift.
"""
import re
import secrets
import time
from typing import Iterable, Iterator

from otpfast import keyuri
from otpfast.errors import Conflict, InvalidParameter, NotFound
from otpfast.store import ACCOUNT_ACTIVE, Store, new_serial

from . import audit, policy
from .derivation import HOTP_KEY_BYTES
from .usertokens import DESCRIPTION_MAX

CHUNK = 5000        # add_many: accounts inserted per executemany
_HEX = re.compile(r"[0-9a-fA-F]+")


def _token_params(spec) -> dict:
    """A further token's params from an imported spec (drift: TimeDrift and T0 in steps)."""
    params = policy.account_params(spec.type, digits=spec.digits, algorithm=spec.algorithm,
                                   period=spec.period if spec.type == "totp" else None)
    for key in ("lockout", "authorities"):
        params.pop(key, None)
    if spec.type == "totp":
        if spec.t0 % spec.period:
            raise InvalidParameter(spec.source, "t0: must be a whole number of time steps")
        drift = (spec.drift or 0) - spec.t0 // spec.period
        if drift:
            params["drift"] = drift
    return params


def read_data(data: bytes, fmt: str, *, psk: str | None = None,
              password: str | None = None) -> list:
    """The tokens of a file (importers.read_tokens; ``psk``: the PSKC pre-shared key as hex),
    touching no store (a password's PBKDF2 rounds may run in a worker thread). A file with
    no token is refused (field ``file``)."""
    from otpfast.importers import read_tokens

    if psk is not None and password is not None:
        raise InvalidParameter("psk", "give a pre-shared key or a password, not both")
    key = None
    if psk is not None:
        text = psk.strip()
        if not _HEX.fullmatch(text) or len(text) % 2:
            raise InvalidParameter("psk", "the pre-shared key must be hex")
        key = bytes.fromhex(text)
    if password is not None and not password:
        raise InvalidParameter("password", "is empty")
    specs = read_tokens(data, fmt, psk=key, password=password)
    if not specs:
        raise InvalidParameter("file", "the file holds no token: nothing imported")
    return specs


class Bulk:
    """``source``/``client``: who acts, for the audit entries (as services.admin.Admin)."""

    def __init__(self, store: Store, *, clock=time.time, source: str = "cli",
                 client: str = "-"):
        self.store = store
        self.clock = clock
        self.source = source
        self.client = client

    def _audit(self, tx, now, what: str, user: str = "-"):
        tx.audit(now, audit.ADMIN, user, self.client, self.source, what)

    # -- import ---------------------------------------------------------------------------
    def import_data(self, data: bytes, fmt: str, *, psk: str | None = None,
                    password: str | None = None, user: str | None = None) -> list[dict]:
        """Read a token file (:func:`read_data`) and import every token of it
        (:meth:`import_tokens`)."""
        return self.import_tokens(read_data(data, fmt, psk=psk, password=password), user=user)

    def import_tokens(self, specs, *, user: str | None = None) -> list[dict]:
        """Store every spec (importers.TokenSpec) in one transaction, or none: raises
        InvalidParameter naming the spec's source. Returns per token {serial, user, type,
        main, new_user} (no secret)."""
        if user is not None:
            policy.validate_name(user, "user")
        plan = []
        for spec in specs:
            owner = spec.user or user
            if owner is None:
                raise InvalidParameter(spec.source, "no user: the file names none for this "
                                       "token; give --user")
            description = spec.description or ""
            if len(description) > DESCRIPTION_MAX:
                raise InvalidParameter(spec.source, f"description: at most {DESCRIPTION_MAX} "
                                       "characters")
            plan.append((spec, owner, _token_params(spec), description))
        now = self.clock()
        done = []
        with self.store.transaction() as tx:
            serials = [spec.serial for spec, *_ in plan if spec.serial is not None]
            taken = tx.existing("tokens", serials)
            for spec, *_ in plan:
                if spec.serial in taken:
                    raise Conflict(spec.source, f"serial {spec.serial!r} exists "
                                           "already in the store: nothing imported")
            created, marked = set(), set()
            for spec, owner, params, description in plan:
                serial = spec.serial or self._new_serial(tx)
                material = {"key": spec.secret.hex()}
                counter = spec.counter or 0
                record = tx.account(owner)
                if record is None:
                    account_params = {**policy.account_params(
                        spec.type, digits=spec.digits, algorithm=spec.algorithm,
                        period=spec.period if spec.type == "totp" else None), **params}
                    if not tx.add_account(owner, spec.type, account_params, material, None, now,
                                          counter=counter, serial=serial):
                        raise InvalidParameter(spec.source, f"user {owner!r} cannot be added")
                    if description and not tx.change_token(serial, description=description):
                        raise InvalidParameter(spec.source, "the token cannot be described")
                    created.add(owner)
                    self._audit(tx, now, f"account-added:{spec.type}", owner)
                    main = True
                else:
                    if owner not in marked and not record.params.get("tokens"):
                        if not tx.set_account_params(owner, {**record.params, "tokens": True}):
                            raise InvalidParameter(spec.source,
                                                   f"user {owner!r} cannot be changed")
                    marked.add(owner)
                    if not tx.add_token(serial, owner, spec.type, params, material, now,
                                        description=description, counter=counter):
                        raise Conflict(spec.source, f"serial {serial!r} exists already")
                    main = False
                self._audit(tx, now, f"token-imported:{spec.type}:{serial}", owner)
                done.append({"serial": serial, "user": owner, "type": spec.type, "main": main,
                             "new_user": owner in created, "source": spec.source})
        return done

    def _new_serial(self, tx) -> str:
        while True:
            serial = new_serial()
            if tx.token(serial) is None:
                return serial

    # -- export ---------------------------------------------------------------------------
    def export_specs(self, user: str | None = None):
        """(specs, skipped): every hotp/totp token (of ``user``) as an importers.TokenSpec
        with its secret; ``skipped``: (serial, type) of the others (not exportable)."""
        from otpfast.importers.spec import MAX_DRIFT_SECONDS, TokenSpec

        if user is not None and self.store.account(user) is None:
            raise NotFound("user", f"no account named {user!r}")
        specs, skipped = [], []
        for token in self.store.tokens(user):
            if token.main:
                account = self.store.account(token.user)
                if account is None or account.type not in ("hotp", "totp") \
                        or account.state != ACCOUNT_ACTIVE:
                    skipped.append((token.serial, token.type))
                    continue
                kind, params, material = account.type, account.params, account.material
                counter = account.counter
            else:
                if token.type not in ("hotp", "totp"):
                    skipped.append((token.serial, token.type))
                    continue
                kind, params, material = token.type, token.params, token.material
                counter = token.counter
            settings = {}
            if kind == "hotp":
                settings["counter"] = counter
            else:
                period, drift, t0 = params["period"], params.get("drift", 0), 0
                if abs(drift) * period > MAX_DRIFT_SECONDS and drift < 0:
                    drift, t0 = 0, -drift * period     # an imported T0, given back as T0
                settings.update(period=period, t0=t0, drift=drift)
            specs.append(TokenSpec(source=f"token {token.serial}", type=kind,
                                   secret=bytes.fromhex(material["key"]),
                                   digits=params["digits"], algorithm=params["algorithm"],
                                   serial=token.serial, user=token.user,
                                   description=token.description or None, **settings))
        return specs, skipped

    def note_export(self, count: int, user: str | None) -> None:
        now = self.clock()
        with self.store.transaction() as tx:
            self._audit(tx, now, f"tokens-exported:{count}", user or "-")

    # -- enrolment ------------------------------------------------------------------------
    def add_many(self, users: Iterable[tuple[int, str, str | None]], type: str, *,
                 issuer: str = "otpfast", **settings) -> Iterator[tuple[str, str]]:
        """Create a hotp/totp account per (line number, name, issuer or None) with a fresh
        CSPRNG key, all in one transaction (inserted CHUNK at a time, sealed in bulk). Yields
        (line number, name, otpauth URI) as each chunk is inserted - the URIs hold secrets; nothing is committed
        until the generator is exhausted, and an error (InvalidParameter naming the line,
        ``line N``) rolls everything back. One audit entry ``accounts-added:N`` records the
        rows."""
        if type not in ("hotp", "totp"):
            raise InvalidParameter("type", "add-many enrols hotp or totp users")
        params = policy.account_params(type, **settings)
        if params["authorities"]:
            raise InvalidParameter("authorities", "add-many users get CSPRNG secrets")
        key_bytes = HOTP_KEY_BYTES[params["algorithm"]]
        digits, algorithm, period = params["digits"], params["algorithm"], params.get("period", 30)
        now = self.clock()
        count, seen = 0, set()
        with self.store.transaction() as tx:
            chunk = []
            for number, name, user_issuer in users:
                where = f"line {number}"
                try:
                    policy.validate_name(name, "name")
                except InvalidParameter as exc:
                    raise InvalidParameter(where, exc.message) from None
                if name in seen:
                    raise InvalidParameter(where, f"user {name!r} is given twice")
                seen.add(name)
                chunk.append((number, name, user_issuer or issuer))
                if len(chunk) == CHUNK:
                    yield from self._add_chunk(tx, chunk, type, params, key_bytes, now,
                                               digits, algorithm, period)
                    count += len(chunk)
                    chunk = []
            if chunk:
                yield from self._add_chunk(tx, chunk, type, params, key_bytes, now,
                                           digits, algorithm, period)
                count += len(chunk)
            if not count:
                raise InvalidParameter("from", "the file names no user")
            self._audit(tx, now, f"accounts-added:{count}")

    def _add_chunk(self, tx, chunk, type, params, key_bytes, now, digits, algorithm, period):
        exists = tx.existing("accounts", [name for _, name, _ in chunk])
        if exists:
            number, name = next((k, n) for k, n, _ in chunk if n in exists)
            raise Conflict(f"line {number}", f"account {name!r} exists already")
        keys = [secrets.token_bytes(key_bytes) for _ in chunk]
        tx.add_accounts([(name, type, params, {"key": key.hex()})
                         for (_, name, _), key in zip(chunk, keys)], now)
        build = keyuri.build_uri
        for (number, name, user_issuer), key in zip(chunk, keys):
            try:
                uri = build(type, key, name, issuer=user_issuer, algorithm=algorithm,
                            digits=digits, period=period)
            except InvalidParameter as exc:
                raise InvalidParameter(f"line {number}", f"{exc.field}: {exc.message}") from None
            yield number, name, uri
