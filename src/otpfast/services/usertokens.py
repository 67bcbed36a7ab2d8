"""Users and their tokens (what ``otpfast token ...`` and ``account set-pin`` call).

An account is a user. Its first token - the one ``account add`` creates, of any type - is
its *main* token: the account row holds its secret and verification state (so the request
path, the key ceremony and the fast verification path are unchanged), and a tokens row
names it (serial, description, enabled). ``token add`` gives the user further tokens of the
types a user verifies without the server issuing (FURTHER_TYPES), each with its own secret
and state in its tokens row. Once a user has further tokens, a disabled main token or a PIN,
its params carry ``"tokens": true`` and verification reads its tokens (services.distribution).
"""
import secrets
import time

from otpfast.errors import Conflict, InvalidParameter, InvalidToken, NotFound
from otpfast.store import ACCOUNT_ACTIVE, Store, TokenRecord, new_serial

from . import audit, pin as pins, policy, tokens
from .derivation import SECRET_BYTES

FURTHER_TYPES = ("hotp", "totp", "recovery")
HOTP_SYNC_WINDOW = 1000             # token resync: the counters searched after the stored one
TOTP_SYNC_SECONDS = 24 * 3600       # token resync: the clock drift searched either way
DESCRIPTION_MAX = 200
RESYNC_FAILED = ("the two OTPs were not found in a row within the sync window: nothing "
                 "changed")


def _serial_of(serial: str) -> str:
    if not isinstance(serial, str) or not 1 <= len(serial) <= 64 or not serial.isprintable():
        raise InvalidParameter("serial", "must be 1..64 printable characters")
    return serial


class TokenAdmin:
    """``source``/``client``: who acts, for the audit entries (as services.admin.Admin)."""

    def __init__(self, store: Store, *, clock=time.time, source: str = "cli",
                 client: str = "-"):
        self.store = store
        self.clock = clock
        self.source = source
        self.client = client

    def _audit(self, tx, now, what: str, user: str):
        tx.audit(now, audit.ADMIN, user, self.client, self.source, what)

    def _user(self, tx, name: str):
        record = tx.account(name)
        if record is None:
            raise NotFound("user", f"no account named {name!r}")
        return record

    def _mark(self, tx, record) -> None:
        """The user's verification reads its tokens from now on."""
        if not record.params.get("tokens"):
            if not tx.set_account_params(record.name, {**record.params, "tokens": True}):
                raise InvalidParameter("user", f"account {record.name!r} cannot be changed")

    # -- adding -------------------------------------------------------------------------
    def add(self, user: str, type: str, *, description: str = "", count: int | None = None,
            **settings) -> tuple[TokenRecord, list[str] | None]:
        """A further token of ``user``: hotp/totp (settings as account add) or recovery
        (``count`` codes, returned once: the store keeps only their hashes). Returns the
        token and the recovery codes (None for other types)."""
        if type not in FURTHER_TYPES:
            raise InvalidParameter("type", f"a user's further tokens are one of "
                                   f"{', '.join(FURTHER_TYPES)}; server-issued types are an "
                                   "account's main token (otpfast account add)")
        if not isinstance(description, str) or len(description) > DESCRIPTION_MAX \
                or not description.isprintable():
            raise InvalidParameter("description", f"must be at most {DESCRIPTION_MAX} "
                                   "printable characters")
        serial = self._new_serial()
        codes = None
        if type == "recovery":
            if settings:
                raise InvalidParameter(sorted(settings)[0].replace("_", "-"),
                                       "recovery tokens take only --count")
            count = pins.DEFAULT_RECOVERY_COUNT if count is None else count
            if isinstance(count, bool) or not isinstance(count, int) \
                    or not 1 <= count <= pins.MAX_RECOVERY_COUNT:
                raise InvalidParameter("count", f"must be 1..{pins.MAX_RECOVERY_COUNT}")
            codes = pins.new_recovery_codes(count)
            keys = self.store.keys
            params = {"count": count}
            material = {"hashes": [pins.recovery_hash(keys, serial, pins.normalise_code(c)).hex()
                                   for c in codes]}
        else:
            if count is not None:
                raise InvalidParameter("count", "only recovery tokens have a count")
            settings.pop("lockout", None)       # the user's, not the token's
            params = policy.account_params(type, **settings)
            for key in ("lockout", "authorities", "ttl"):
                params.pop(key, None)
            material, _, _ = tokens.derive_material(type, params, secrets.token_bytes(SECRET_BYTES))
        now = self.clock()
        with self.store.transaction() as tx:
            record = self._user(tx, user)
            self._mark(tx, record)
            if not tx.add_token(serial, user, type, params, material, now,
                                description=description):
                raise Conflict("serial", f"token {serial} exists already")
            self._audit(tx, now, f"token-added:{type}:{serial}", user)
        return self.store.token(serial), codes

    def enrol(self, user: str, type: str, *, issuer: str = "otpfast", description: str = "",
              count: int | None = None, **settings) -> tuple[TokenRecord, str | None,
                                                             list[str] | None]:
        """:meth:`add`, then what the user enrols with (both contain secrets, shown once):
        (token, otpauth URI of a hotp/totp token or None, recovery codes or None)."""
        token, codes = self.add(user, type, description=description, count=count, **settings)
        uri = None if codes is not None else self.enrollment_uri(token.serial, issuer=issuer)
        return token, uri, codes

    def _new_serial(self) -> str:
        while True:
            serial = new_serial()
            if self.store.token(serial) is None:
                return serial

    # -- reading ------------------------------------------------------------------------
    def list(self, user: str | None = None) -> list[TokenRecord]:
        if user is not None and self.store.account(user) is None:
            raise NotFound("user", f"no account named {user!r}")
        return self.store.tokens(user)

    def get(self, serial: str) -> TokenRecord:
        token = self.store.token(_serial_of(serial))
        if token is None:
            raise NotFound("serial", f"no token {serial!r}")
        return token

    def describe(self, token: TokenRecord) -> dict:
        """Non-secret facts about a token (its user's main token: the account's settings
        and state)."""
        info = {"serial": token.serial, "user": token.user, "description": token.description,
                "enabled": token.enabled, "main": token.main}
        if token.main:
            account = self.store.account(token.user)
            params = {} if account is None else account.params
            info["type"] = token.type
            if account is not None:
                info["state"] = account.state
                if account.type in ("hotp",) + policy.SERVER_ISSUED:
                    info["counter"] = account.counter
                if account.type == "totp":
                    info["last_step"] = account.last_step
        else:
            params = token.params
            info["type"] = token.type
            if token.type == "hotp":
                info["counter"] = token.counter
            if token.type == "totp":
                info["last_step"] = token.last_step
            if token.type == "recovery":
                info["count"] = params["count"]
                info["remaining"] = params["count"] - bin(token.counter).count("1")
        for key in ("digits", "algorithm", "period", "window", "drift"):
            if key in params:
                info[key] = params[key]
        return info

    def enrollment_uri(self, serial: str, *, issuer: str = "otpfast") -> str:
        """The otpauth:// URI of a further hotp/totp token (contains the secret: show it
        only to the user enrolling; a main token: ``otpfast enroll USER``)."""
        from otpfast import keyuri

        token = self.get(serial)
        if token.main or token.type not in ("hotp", "totp"):
            raise InvalidParameter("serial", "only a further hotp/totp token has a URI here "
                                   "(a main token: otpfast enroll USER)")
        now = self.clock()
        with self.store.transaction() as tx:
            self._audit(tx, now, f"enrolment-shown:{token.serial}", token.user)
        params = token.params
        return keyuri.build_uri(token.type, bytes.fromhex(token.material["key"]),
                                f"{token.user} {token.serial}", issuer=issuer,
                                algorithm=params["algorithm"], digits=params["digits"],
                                period=params.get("period", 30), counter=token.counter)

    # -- changing -------------------------------------------------------------------------
    def set_enabled(self, serial: str, enabled: bool) -> None:
        token = self.get(serial)
        now = self.clock()
        with self.store.transaction() as tx:
            if token.main:
                self._mark(tx, self._user(tx, token.user))
            if not tx.change_token(token.serial, enabled=enabled):
                raise InvalidParameter("serial", f"token {serial!r} cannot be changed")
            self._audit(tx, now, f"token-{'enabled' if enabled else 'disabled'}:{serial}",
                        token.user)

    def delete(self, serial: str) -> None:
        token = self.get(serial)
        if token.main:
            raise InvalidParameter("serial", f"{serial} is the main token of {token.user!r}: "
                                   "disable it, or delete the account")
        now = self.clock()
        with self.store.transaction() as tx:
            if not tx.delete_token(token.serial):
                raise NotFound("serial", f"no token {serial!r}")
            self._audit(tx, now, f"token-deleted:{serial}", token.user)

    def resync(self, serial: str, otp1: str, otp2: str) -> dict:
        """Find two consecutive OTPs: HOTP within HOTP_SYNC_WINDOW counters after the stored
        one (the counter moves past them); TOTP within TOTP_SYNC_SECONDS of now (the drift in
        steps is stored and later checks use it). Raises InvalidToken if not found."""
        token = self.get(serial)
        now = self.clock()
        with self.store.transaction() as tx:
            account = self._user(tx, token.user)
            if token.main:
                kind, params, material = account.type, account.params, account.material
                counter, last_step = account.counter, account.last_step
                if account.state != ACCOUNT_ACTIVE:
                    raise InvalidParameter("serial", "the account waits for its key ceremony")
            else:
                token = tx.token(token.serial) or token
                kind, params, material = token.type, token.params, token.material
                counter, last_step = token.counter, token.last_step
            if kind not in ("hotp", "totp"):
                raise InvalidParameter("serial", f"{kind} tokens are not resynchronised")
            for otp in (otp1, otp2):
                if not (isinstance(otp, str) and len(otp) == params["digits"]
                        and otp.isascii() and otp.isdigit()):
                    raise InvalidParameter("otp", f"must be {params['digits']} ASCII digits")
            from otpfast.hotp import HOTP
            hotp = HOTP(bytes.fromhex(material["key"]), digits=params["digits"],
                        algorithm=params["algorithm"])
            if kind == "hotp":
                first, span = counter, HOTP_SYNC_WINDOW + 1
            else:
                period = params["period"]
                reach = TOTP_SYNC_SECONDS // period
                first = max(int(now // period) - reach, 0)
                span = int(now // period) + reach - first + 1
            found = _consecutive(hotp.values(first, span + 1), int(otp1), int(otp2))
            if found is None:
                raise InvalidToken()
            at = first + found            # the counter / step of otp1
            result = {"serial": token.serial}
            if kind == "hotp":
                new = {"counter": at + 2}
                result["counter"] = at + 2
            else:
                drift = at + 1 - int(now // period)
                new = {"last_step": max(at + 1, last_step), "drift": drift}
                result["drift_steps"] = drift
            if token.main:
                ok = True
                if kind == "hotp":
                    ok = tx.advance_counter(account.name, account.counter, new["counter"])
                else:
                    ok = tx.set_account_params(account.name,
                                               {**account.params, "drift": new["drift"]})
                    if ok and new["last_step"] > account.last_step:
                        ok = tx.advance_step(account.name, account.last_step, new["last_step"])
            elif kind == "hotp":
                ok = tx.change_token(token.serial, counter=new["counter"])
            else:
                ok = tx.change_token(token.serial, params={**params, "drift": new["drift"]},
                                     last_step=new["last_step"])
            if not ok:
                raise InvalidParameter("serial", f"token {serial!r} cannot be changed")
            self._audit(tx, now, f"token-resynced:{token.serial}", token.user)
        return result

    # -- PIN ------------------------------------------------------------------------------
    def set_pin(self, user: str, pin: str | None) -> None:
        """Set (or with None remove) the user's PIN: then only PIN + OTP in one field is
        accepted (services.distribution)."""
        record = None if pin is None else pins.new_pin_record(self.store.keys, user, pin)
        now = self.clock()
        with self.store.transaction() as tx:
            account = self._user(tx, user)
            params = {**account.params, "tokens": True}
            if record is None:
                params.pop("pin", None)
            else:
                params["pin"] = record
            if not tx.set_account_params(user, params):
                raise InvalidParameter("user", f"account {user!r} cannot be changed")
            self._audit(tx, now, "pin-set" if record else "pin-removed", user)


def _consecutive(values, first: int, second: int) -> int | None:
    """The index i with values[i] == first and values[i + 1] == second (the first such)."""
    for index in range(len(values) - 1):
        if values[index] == first and values[index + 1] == second:
            return index
    return None
