"""SIGHUP: reload what can change while serving, without dropping a connection.

Reloaded: the TLS certificate and key (tls.ServerIdentity: the next handshakes use them,
established connections keep theirs), the RADIUS clients (secrets and networks, from
--radius-secret-file / --radius-clients, and the Message-Authenticator and realm options),
and the failure throttles (--failures-per-source / --failures-per-client), each as the
--config file now says unless the command line (or environment) set it. Everything is read
and checked first: one bad part refuses the whole reload with an error line, and the
previous settings keep serving. A changed option that only applies at start (--listen,
--workers, timeouts, ...) is named in a warning and left as it is.
"""
import logging
import ssl

import click

from otpfast.errors import InvalidParameter, OtpfastError
from otpfast_cli.config import reload_values
from otpfast_cli.radius_options import RADIUS_NAMES, build_radius_config

RELOADABLE = frozenset(RADIUS_NAMES) - {"radius_udp", "radius_socket"} | {
    "failures_per_source", "failures_per_client"}

log = logging.getLogger("otpfast.server")


def _option_name(command, name):
    for param in command.params:
        if param.name == name:
            return max(param.opts, key=len)
    return name


class Reloader:
    """Call it on SIGHUP; returns True if the new settings are in use."""

    def __init__(self, ctx, identity, services=(), front_end=None):
        self._ctx = ctx
        self._identity = identity
        self._services = services
        self._front_end = front_end

    def _radius(self, values):
        if self._front_end is None:
            return None
        config = build_radius_config(**{name: values[name] for name in RADIUS_NAMES})
        if config is None:
            raise InvalidParameter("radius", "the RADIUS front end stops only at a restart")
        return config

    def __call__(self):
        ctx = self._ctx
        try:
            values = reload_values(ctx)
            # what applies at start only keeps its running value
            effective = {name: value if name in RELOADABLE else ctx.params[name] for name, value in values.items()}
            context = self._identity.load()
            radius = self._radius(effective)
        except click.BadParameter as exc:
            return self._refuse(exc.format_message())
        except InvalidParameter as exc:
            return self._refuse(f"--{exc.field}: {exc.message}")
        except (OtpfastError, OSError, ssl.SSLError, ValueError) as exc:
            return self._refuse(f"the TLS certificate or key: {exc}")
        later = [_option_name(ctx.command, name) for name, value in values.items()
                 if name not in RELOADABLE and value != ctx.params[name]]
        if later:
            log.warning("SIGHUP: %s changed: applies at the next start only", ", ".join(later),
                        extra={"event": "reload", "restart_needed": later})
        self._identity.use(context)
        if radius is not None:
            self._front_end.reload(radius)
        for service in self._services:
            service.set_failure_limits(effective["failures_per_source"], effective.get("failures_per_client"))
        pin = self._identity.pin()
        log.info("SIGHUP: reloaded the TLS certificate (key pin %s)%s and the failure throttles", pin,
                 ", the RADIUS clients" if radius is not None else "",
                 extra={"event": "reload", "ok": True, "pin": pin})
        return True

    def _refuse(self, reason):
        log.error("SIGHUP: reload refused, still serving the previous settings: %s", reason,
                  extra={"event": "reload", "ok": False})
        return False
