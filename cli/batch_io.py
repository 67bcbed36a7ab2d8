"""What every ``otpfast batch`` command with --count/--check shares: OTPs streamed to --out in
bounded chunks (a progress bar when stderr is a terminal), files of OTPs read back in bounded
chunks for --check, and library errors turned into exit-2 messages naming a real option."""
import array
import os
import sys

import click

from otpfast import core
from otpfast.errors import InvalidParameter
from otpfast_cli.options import POSITIVE_INT, bad_parameter

CHUNK = 1 << 20          # OTPs per core call: bounds memory (4 MiB as u32), drives the progress bar
TEXT_BLOCK = 1 << 20     # bytes of a text --check file parsed at a time (~150k OTPs)
_U32_MAX = 0xFFFFFFFF

# A library error names its parameter; where a batch command's option is called otherwise:
_OPTION_OF_FIELD = {"num_threads": "--threads", "passphrase": "--passphrase-file"}


def stream_options(check_help):
    """--count, --format, --out and --check, the same on every streaming batch command."""
    def decorate(f):
        f = click.option("--check", type=click.Path(dir_okay=False, exists=True, readable=True),
                         default=None, help=check_help)(f)
        f = click.option("--out", default="-", show_default=True,
                         type=click.Path(dir_okay=False, allow_dash=True),
                         help="Output file ('-' for stdout).")(f)
        f = click.option("--format", "fmt", type=click.Choice(["text", "u32"]), default="text",
                         show_default=True,
                         help="text: one zero-padded OTP per line; u32: little-endian uint32 per OTP.")(f)
        f = click.option("--count", type=POSITIVE_INT, default=None,
                         help="How many OTPs (with --check: optional, must match the file).")(f)
        return f
    return decorate


def option_error(exc: InvalidParameter):
    """A library InvalidParameter as click's exit-2 error naming the command's option."""
    return bad_parameter(InvalidParameter(_OPTION_OF_FIELD.get(exc.field, exc.field), exc.message))


def call(fn, *args, **kwargs):
    """fn(...), with InvalidParameter turned into option_error."""
    try:
        return fn(*args, **kwargs)
    except InvalidParameter as exc:
        raise option_error(exc) from None


def require_count_or_check(count, check):
    if count is None and check is None:
        raise click.UsageError("give --count N, or --check FILE")


def require_for_check(check, **given):
    """--check rebuilds the stream: the options that are random or 'now' when left out."""
    missing = [name for name, value in given.items() if value is None]
    if check and missing:
        raise click.UsageError(f"--check rebuilds the stream: give {', '.join(missing)}")


# ------------------------------------------------------------------------ generate

def run(generate, count, fmt, out_path, digits):
    """generate(position, k) -> (otps, next_position), position None at the start: the
    stream in chunks of at most CHUNK OTPs, written to --out as they come."""
    out = _open_out(out_path)
    try:
        if show_progress(count):
            with click.progressbar(length=count, label="generating", file=sys.stderr) as bar:
                _chunks(generate, count, fmt, out, digits, bar.update)
        else:
            _chunks(generate, count, fmt, out, digits, lambda k: None)
        out.flush()
    finally:
        if out_path != "-":
            out.close()


def show_progress(count):
    """A progress bar only for long runs, and only when stderr is a terminal."""
    return count > CHUNK and sys.stderr.isatty()


def _chunks(generate, count, fmt, out, digits, progress):
    position, left = None, count
    while left:
        k = min(CHUNK, left)
        otps, position = generate(position, k)
        _write(out, otps, fmt, digits)
        left -= k
        progress(k)


def _open_out(path):
    if path == "-":
        return click.open_file("-", "wb")
    try:
        return open(path, "wb")
    except OSError as exc:
        raise click.BadParameter(f"cannot write {path!r}: {exc.strerror}", param_hint="'--out'") from None


def _write(out, values, fmt, digits):
    if fmt == "u32":
        if sys.byteorder != "little":
            values = array.array("I", values)
            values.byteswap()
        out.write(values)
    else:
        out.write(core.format_decimal(values, digits))


# --------------------------------------------------------------------------- check

def read_chunks(path, fmt):
    """The OTPs of a --check file as array('I') chunks of bounded size (too big for 32 bits
    reads as 2^32 - 1, which never verifies). Bad content is an exit-2 error naming --check."""
    with open(path, "rb") as f:
        chunks = _u32_chunks(f) if fmt == "u32" else _text_chunks(f)
        empty = True
        for values in chunks:
            empty = False
            yield values
    if empty:
        raise click.BadParameter("the file holds no OTPs", param_hint="'--check'")


def read_all(path, fmt):
    """The whole --check file as one array('I')."""
    values = array.array("I")
    for chunk in read_chunks(path, fmt):
        values.extend(chunk)
    return values


def _u32_chunks(f):
    size = os.fstat(f.fileno()).st_size
    if size % 4:
        raise click.BadParameter(f"{size} bytes is not a whole number of uint32 values", param_hint="'--check'")
    while data := f.read(4 * CHUNK):
        values = array.array("I")
        values.frombytes(data[:len(data) - len(data) % 4])
        if sys.byteorder != "little":
            values.byteswap()
        yield values


def _text_chunks(f):
    rest = b""
    while True:
        block = f.read(TEXT_BLOCK)
        data = rest + block
        if not data:
            return
        cut = len(data)
        if block:                             # keep a number split across blocks for the next one
            while cut and not data[cut - 1:cut].isspace():
                cut -= 1
            if not cut:
                raise click.BadParameter("not one decimal OTP per line", param_hint="'--check'")
        data, rest = data[:cut], data[cut:]
        if values := _parse_text(data):
            yield values
        if not block:
            return


def _parse_text(data):
    try:
        numbers = list(map(int, data.split()))
    except ValueError:
        raise click.BadParameter("not one decimal OTP per line", param_hint="'--check'") from None
    try:
        return array.array("I", numbers)
    except OverflowError:
        if any(v < 0 for v in numbers):
            raise click.BadParameter("negative OTP", param_hint="'--check'") from None
        return array.array("I", (min(v, _U32_MAX) for v in numbers))


def expect_count(count, total):
    """--count given with --check must be the number of OTPs in the file."""
    if count is not None and count != total:
        raise click.BadParameter(f"the --check file holds {total} OTPs, not {count}", param_hint="'--count'")


def report(ctx, verified, total):
    click.echo(f"{verified} of {total} OTPs verified")
    ctx.exit(0 if verified == total else 1)
