"""Logging of the long-running commands: ``--log-format text|json`` on stderr.

``json`` writes one object per line: ``time`` (UTC, ISO 8601 with milliseconds), ``level``,
``logger``, ``message`` (formatted), then the record's structured fields (the ``extra=`` of
the logging call, e.g. ``peer``) and ``exception`` (the traceback) when there is one. The
messages are the same as in text: none carries a secret.
"""
import datetime
import json
import logging

import click

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                    .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(verbose, log_format="text"):
    """INFO with ``-v``, else WARNING, on stderr (a no-op when logging is set up already)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


log_format_option = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="Log lines on stderr as text, or one JSON object per line (time, level, logger, "
         "message and the structured fields).")
