"""``otpfast batch hotp|totp|hashchain``: HOTP/TOTP ranges (and --check) and hash chains at C speed."""
import operator
import secrets
import sys
import time

import click

from otpfast import hashchain, rfc2289, totp
from otpfast.errors import InvalidParameter
from otpfast.hotp import ALGORITHMS as HOTP_ALGORITHMS
from otpfast.hotp import HOTP, parse_key
from otpfast_cli import batch_io
from otpfast_cli.batch_io import call
from otpfast_cli.options import INT, POSITIVE_INT, warn_secret_in_argv

_SECRET_HELP = "(also from the environment: OTPFAST_BATCH_{CMD}_SECRET / _SECRET_BASE32, which keeps it off argv)"
_LAST_COUNTER = 2**64 - 1


def _secret_options(cmd):
    def decorate(f):
        f = click.option("--secret-base32", "secret_base32", metavar="B32",
                         envvar=f"OTPFAST_BATCH_{cmd}_SECRET_BASE32",
                         help="The key in base32 (case, spaces and padding ignored).")(f)
        f = click.option("--secret", "secret_hex", metavar="HEX", envvar=f"OTPFAST_BATCH_{cmd}_SECRET",
                         help="The key in hex, at least 128 bits. " + _SECRET_HELP.format(CMD=cmd))(f)
        return f
    return decorate


def _common_output(f):
    f = click.option("--threads", type=POSITIVE_INT, default=None,
                     help="Worker threads (default: all cores; results never depend on it).")(f)
    f = batch_io.stream_options("Verify every OTP in this file (same --format, --digits, ...) against "
                                "these parameters, the i-th against the i-th; exit 0 iff all verify.")(f)
    f = click.option("--algorithm", type=click.Choice(HOTP_ALGORITHMS), default="sha1", show_default=True)(f)
    f = click.option("--digits", type=INT, default=6, show_default=True, help="6 to 8.")(f)
    return f


def _generator(secret_hex, secret_base32, digits, algorithm):
    ctx = click.get_current_context()
    warn_secret_in_argv(ctx, "secret_hex", "secret_base32",
                        env_hint=f"OTPFAST_BATCH_{ctx.command.name.upper()}_SECRET (or _SECRET_BASE32)")
    if secret_hex is None and secret_base32 is None:
        raise click.UsageError("give the key with --secret HEX or --secret-base32 B32")
    if secret_hex is not None and secret_base32 is not None:
        raise click.UsageError("give only one of --secret and --secret-base32")
    return call(lambda: HOTP(parse_key(hex=secret_hex, base32=secret_base32), digits=digits, algorithm=algorithm))


def _stream(ctx, generator, first, count, fmt, out, check, threads):
    """HOTP values for counters first, first+1, ...: written in chunks, or checked against --check."""
    call(generator.values, first, 0, num_threads=threads)      # --counter, --threads: before any output
    if check is not None:
        _check(ctx, generator, first, count, fmt, check, threads)
    if first + count - 1 > _LAST_COUNTER:
        raise click.BadParameter(f"the last counter, {first + count - 1}, is past 2^64 - 1", param_hint="'--count'")

    def generate(position, k):
        position = first if position is None else position
        return generator.values(position, k, num_threads=threads), position + k

    batch_io.run(generate, count, fmt, out, generator.digits)


def _check(ctx, generator, first, count, fmt, check, threads):
    """The i-th OTP of the file against counter first+i, a chunk at a time."""
    verified = total = 0
    for otps in batch_io.read_chunks(check, fmt):
        expected = call(generator.values, first + total, len(otps), num_threads=threads)
        if otps.tobytes() == expected.tobytes():
            verified += len(otps)
        else:
            verified += sum(map(operator.eq, otps, expected))
        total += len(otps)
    batch_io.expect_count(count, total)
    batch_io.report(ctx, verified, total)


@click.command("hotp")
@_secret_options("HOTP")
@click.option("--counter", type=INT, default=0, show_default=True, help="First counter value.")
@_common_output
@click.pass_context
def hotp_command(ctx, secret_hex, secret_base32, counter, count, digits, algorithm, fmt, out, check, threads):
    """RFC 4226 HOTP values for counters COUNTER .. COUNTER+COUNT-1, or --check a file of them."""
    batch_io.require_count_or_check(count, check)
    generator = _generator(secret_hex, secret_base32, digits, algorithm)
    _stream(ctx, generator, counter, count, fmt, out, check, threads)


@click.command("totp")
@_secret_options("TOTP")
@click.option("--time", "at", type=INT, default=None,
              help="Unix time of the first step (default: now; needed with --check).")
@click.option("--step", type=POSITIVE_INT, default=30, show_default=True, help="Seconds per step.")
@click.option("--t0", type=INT, default=0, show_default=True, help="Unix time of step 0.")
@_common_output
@click.pass_context
def totp_command(ctx, secret_hex, secret_base32, at, step, t0, count, digits, algorithm, fmt, out, check, threads):
    """RFC 6238 TOTP values for COUNT consecutive steps from floor((TIME - T0) / STEP), or
    --check a file of them."""
    batch_io.require_for_check(check, **{"--time": at})
    batch_io.require_count_or_check(count, check)
    generator = _generator(secret_hex, secret_base32, digits, algorithm)
    first = call(totp.timecode, int(time.time()) if at is None else at, step=step, t0=t0)
    if check is None:
        click.echo(f"first step: {first}", err=True)
    _stream(ctx, generator, first, count, fmt, out, check, threads)


def _read_passphrase(passphrase_file):
    if passphrase_file is not None:
        text = passphrase_file.read()
    elif sys.stdin.isatty():
        text = click.prompt("Pass-phrase", hide_input=True, err=True)
    else:
        text = sys.stdin.readline()
    return text.rstrip("\r\n")


@click.command("hashchain")
@click.option("--rfc2289", "rfc_mode", is_flag=True,
              help="RFC 2289 (S/KEY) mode: seed + pass-phrase, 64-bit folding, words or hex.")
@click.option("--algorithm", default=None,
              help="Paper mode: sha1|sha256|sha384|sha512 (default sha256). "
                   "RFC 2289 mode: md5|sha1 (md4 where the platform has it; default md5).")
@click.option("--seed", default=None,
              help="Paper mode: the seed h(0) in hex (default: 32 random bytes, printed to stderr). "
                   "RFC 2289 mode: 1-16 letters/digits.")
@click.option("--length", type=POSITIVE_INT, default=None, help="Paper mode: chain length n.")
@click.option("--passphrase-file", type=click.File("r", lazy=False), default=None,
              help="RFC 2289 mode: file holding the pass-phrase (default: read it from stdin).")
@click.option("--sequence", type=INT, default=None, help="RFC 2289 mode: the sequence number N to start from.")
@click.option("--count", type=POSITIVE_INT, default=1, show_default=True,
              help="RFC 2289 mode: how many OTPs, from N downwards.")
@click.option("--format", "fmt", type=click.Choice(["words", "hex"]), default="words", show_default=True,
              help="RFC 2289 mode: six dictionary words or hex.")
@click.option("--out", type=click.File("w", lazy=False), default="-", show_default=True)
def hashchain_command(rfc_mode, algorithm, seed, length, passphrase_file, sequence, count, fmt, out):
    """Lamport hash chain (the paper's Algorithm 1) or RFC 2289 one-time passwords.

    Paper mode prints 'i: OTP' for uses i = 1..n (OTP = h(n-i) in hex) and the anchor h(n),
    which the server stores, on stderr. RFC 2289 mode prints 'n: OTP' for n = N down to N-COUNT+1.
    """
    if rfc_mode:
        _rfc2289_mode(algorithm or "md5", seed, passphrase_file, sequence, count, fmt, out)
    else:
        _paper_mode(algorithm or "sha256", seed, length, out)


def _paper_mode(algorithm, seed, length, out):
    if length is None:
        raise click.BadParameter("required in paper mode", param_hint="'--length'")
    if seed is None:
        seed_bytes = secrets.token_bytes(32)
        click.echo(f"seed: {seed_bytes.hex()}", err=True)
    else:
        try:
            seed_bytes = bytes.fromhex(seed.replace(" ", ""))
        except ValueError:
            raise click.BadParameter("not valid hex", param_hint="'--seed'") from None
    chain = call(hashchain.HashChain, seed_bytes, length, algorithm)
    click.echo(f"anchor: {chain.anchor.hex()}", err=True)
    for i in range(1, length + 1):
        out.write(f"{i}: {chain.otp(i)}\n")
    out.flush()


def _rfc2289_mode(algorithm, seed, passphrase_file, sequence, count, fmt, out):
    if seed is None:
        raise click.BadParameter("required in --rfc2289 mode", param_hint="'--seed'")
    if sequence is None:
        raise click.BadParameter("required in --rfc2289 mode", param_hint="'--sequence'")
    passphrase = _read_passphrase(passphrase_file)
    try:
        values = rfc2289.otps(passphrase, seed, sequence, count, algorithm)
    except InvalidParameter as exc:
        if exc.field == "passphrase" and passphrase_file is None:
            raise click.BadParameter(exc.message, param_hint="the pass-phrase read from stdin "
                                                             "(or give --passphrase-file)") from None
        raise batch_io.option_error(exc) from None
    encode = rfc2289.to_words if fmt == "words" else rfc2289.to_hex
    for n, value in values:
        out.write(f"{n}: {encode(value)}\n")
    out.flush()


__all__ = ["hotp_command", "totp_command", "hashchain_command"]
