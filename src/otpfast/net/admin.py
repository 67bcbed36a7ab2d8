"""The admin API's glue: an AdminCall (otpfast.protocol.admin_api) -> the service call the
CLI makes for the same command -> a JSON response.

Every change is audited by the service, as the CLI's are, with the admin client's name and
the peer address in place of "cli". The store calls run on the event loop, ordered after
the verifications submitted before them (AsyncVerifier.call_future); they are short. A PSKC
file is read in a worker thread first: a password costs its PBKDF2 rounds (bounded by
importers.pskc.MAX_PBKDF2_ITERATIONS, about a second), which must not stall the loop.

Errors: a parameter the service refuses -> 400 naming it (404 for a user or token that
does not exist, 409 for one that exists already); the store unavailable -> 503. Neither
the request body nor a secret is logged.
"""
import asyncio
import functools
import logging

from ..errors import Conflict, InvalidParameter, InvalidToken, NotFound, StoreError
from ..protocol import admin_api
from ..services import admin as admin_service, audit
from ..services.admin import Admin
from ..services.bulk import Bulk, read_data
from ..services.usertokens import RESYNC_FAILED, TokenAdmin

log = logging.getLogger("otpfast.net.admin")

_USER_SETTINGS = ("digits", "algorithm", "period", "window", "ttl", "chain_length", "lockout",
                  "lockout_policy", "authorities")
_TOKEN_SETTINGS = ("digits", "algorithm", "period", "window")


class AdminApi:
    """Runs admin calls for one server (the verifier's Distribution and store)."""

    def __init__(self, verifier):
        self._verifier = verifier
        self._distribution = verifier.distribution

    def current(self, client):
        """The admin client still has that role and that credential (not deleted, rotated
        or changed since this connection authenticated)."""
        record = self._distribution.store.client(client.name)
        return (record is not None and record.admin
                and record.credential_hash == client.credential_hash)

    def future(self, call, client, source):
        """An asyncio future of the call's HttpResponse."""
        if call.operation == "token_import":
            return asyncio.ensure_future(self._token_import(call, client.name, source))
        return self._verifier.call_future(self.respond, call, client.name, source)

    def respond(self, call, client_name, source):
        """The HttpResponse of one call (every failure answered here, never raised)."""
        failure, result = self._guarded(
            call, lambda: getattr(self, "_" + call.operation)(call.params, client_name, source))
        return failure or admin_api.respond(*result)

    @staticmethod
    def _guarded(call, work):
        """(None, ``work()``), or (the error response its failure maps to, None)."""
        try:
            return None, work()
        except NotFound as exc:
            return admin_api.error_response(404, exc.message, exc.field), None
        except Conflict as exc:
            return admin_api.error_response(409, exc.message, exc.field), None
        except InvalidParameter as exc:
            return admin_api.error_response(400, exc.message, exc.field), None
        except InvalidToken:
            return admin_api.error_response(400, RESYNC_FAILED, "otp1"), None
        except StoreError as exc:
            log.warning("admin %s: store unavailable: %s", call.operation, type(exc).__name__)
            return admin_api.error_response(503, "the store is unavailable"), None
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 for this request only
            log.error("admin %s failed: %s", call.operation, type(exc).__name__)
            return admin_api.error_response(500, "internal error"), None

    # -- the services, acting as the admin client from its peer address ------------------
    def _admin(self, client, source):
        return Admin(self._distribution.store, clock=self._distribution.clock, source=source,
                     client=client)

    def _tokens(self, client, source):
        return TokenAdmin(self._distribution.store, clock=self._distribution.clock,
                          source=source, client=client)

    # -- users --------------------------------------------------------------------------
    def _user_list(self, params, client, source):
        admin = self._admin(client, source)
        now = admin.clock()
        return 200, {"users": [admin_service.describe(r, now) for r in admin.accounts()]}

    def _user_add(self, params, client, source):
        """``account add`` (then, for hotp/totp, what ``enroll`` prints: the URI)."""
        admin = self._admin(client, source)
        settings = {key: params[key] for key in _USER_SETTINGS if key in params}
        record = admin.add_account(params["name"], params["type"], **settings)
        body = {"user": admin_service.describe(record, admin.clock())}
        if record.type in ("hotp", "totp") and not record.authorities:
            body["uri"] = admin.enrollment_uri(record.name, issuer=params.get("issuer", "otpfast"))
        return 201, body

    def _user_show(self, params, client, source):
        admin = self._admin(client, source)
        return 200, {"user": admin_service.describe(admin.account(params["name"]), admin.clock())}

    def _user_delete(self, params, client, source):
        revoked = self._admin(client, source).delete(params["name"])
        return 200, {"deleted": params["name"], "clients_deleted": revoked}

    def _user_lock(self, params, client, source):
        self._admin(client, source).lock(params["name"])
        return self._user_show(params, client, source)

    def _user_unlock(self, params, client, source):
        self._admin(client, source).unlock(params["name"])
        return self._user_show(params, client, source)

    def _user_set_pin(self, params, client, source):
        self._tokens(client, source).set_pin(params["name"], params["pin"])
        return 200, {"user": params["name"], "pin": True}

    def _user_remove_pin(self, params, client, source):
        self._tokens(client, source).set_pin(params["name"], None)
        return 200, {"user": params["name"], "pin": False}

    # -- tokens -------------------------------------------------------------------------
    def _token_list(self, params, client, source):
        tokens = self._tokens(client, source)
        return 200, {"tokens": [tokens.describe(t) for t in tokens.list(params.get("user"))]}

    def _token_add(self, params, client, source):
        """``token add``: the otpauth URI of a hotp/totp token, the codes of a recovery one."""
        tokens = self._tokens(client, source)
        settings = {key: params[key] for key in _TOKEN_SETTINGS if key in params}
        token, uri, codes = tokens.enrol(params["user"], params["type"],
                                         issuer=params.get("issuer", "otpfast"),
                                         description=params.get("description", ""),
                                         count=params.get("count"), **settings)
        body = {"token": tokens.describe(token)}
        if uri is not None:
            body["uri"] = uri
        if codes is not None:
            body["recovery_codes"] = codes
        return 201, body

    async def _token_import(self, call, client, source):
        """``token import --format pskc``: the document and its key in the body. The file is
        read in a worker thread (a password costs its PBKDF2 rounds, up to about a second:
        verifications go on meanwhile), its tokens stored on the loop like any call."""
        params = call.params
        failure, specs = await asyncio.get_running_loop().run_in_executor(
            None, self._guarded, call, functools.partial(
                read_data, params["pskc"].encode("utf-8"), "pskc", psk=params.get("psk"),
                password=params.get("password")))
        if failure is not None:
            return failure

        def store():
            bulk = Bulk(self._distribution.store, clock=self._distribution.clock, source=source,
                        client=client)
            return 201, {"imported": bulk.import_tokens(specs, user=params.get("user"))}
        failure, result = await self._verifier.call_future(self._guarded, call, store)
        return failure or admin_api.respond(*result)

    def _token_show(self, params, client, source):
        tokens = self._tokens(client, source)
        return 200, {"token": tokens.describe(tokens.get(params["serial"]))}

    def _token_delete(self, params, client, source):
        self._tokens(client, source).delete(params["serial"])
        return 200, {"deleted": params["serial"]}

    def _switch(self, params, client, source, enabled):
        tokens = self._tokens(client, source)
        tokens.set_enabled(params["serial"], enabled)
        return 200, {"token": tokens.describe(tokens.get(params["serial"]))}

    def _token_enable(self, params, client, source):
        return self._switch(params, client, source, True)

    def _token_disable(self, params, client, source):
        return self._switch(params, client, source, False)

    def _token_resync(self, params, client, source):
        return 200, self._tokens(client, source).resync(params["serial"], params["otp1"],
                                                        params["otp2"])

    # -- audit --------------------------------------------------------------------------
    def _audit_list(self, params, client, source):
        """``audit list`` filters, one page: entries after seq ``after``, at most ``limit``;
        ``next``: the ``after`` of the next page (null: no more)."""
        limit = params.get("limit", admin_api.DEFAULT_LIMIT)
        if not 1 <= limit <= admin_api.MAX_LIMIT:
            raise InvalidParameter("limit", f"must be 1..{admin_api.MAX_LIMIT}")
        after = params.get("after", 0)
        since = params.get("since")
        if since is not None:
            since = audit.parse_time(since)
        entries, more = [], False
        found = self._admin(client, source).audit_entries(
            account=params.get("account"), since=since, result=params.get("result"))
        for info in found:
            if info["seq"] <= after:
                continue
            if len(entries) == limit:
                more = True
                break
            entries.append(info)
        found.close()
        return 200, {"entries": entries, "next": entries[-1]["seq"] if more else None}
