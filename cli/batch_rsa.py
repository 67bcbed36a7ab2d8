"""``otpfast batch rsa-lfsr|rsa-primroot``: the paper's RSA-type OTPs in bulk (and --check)."""
import secrets
import shlex

import click

from otpfast import core, rsaparams
from otpfast.errors import InvalidParameter
from otpfast_cli import batch_io
from otpfast_cli.batch_io import call
from otpfast_cli.options import INT

_INSECURE = (
    "This is the paper's RSA-type OTP with a ~20-bit N: INSECURE and PREDICTABLE (N factors "
    "instantly and consecutive LFSR states share bits, so a few observed OTPs give away the "
    "next). For study and batch work only, never for logins."
)


def _common(f):
    f = click.option("--method", type=click.Choice(["auto", "crt", "sqm"]), default="auto", show_default=True,
                     help="Kernel: CRT tables, square-and-multiply, or the faster one (same results).")(f)
    f = click.option("--threads", type=INT, default=None,
                     help="Worker threads (default: all cores; results never depend on it).")(f)
    f = batch_io.stream_options("Verify every OTP in this file (same --format) through OTP^d against "
                                "the stream; exit 0 iff all verify.")(f)
    f = click.option("--digits", type=INT, default=None,
                     help="Digits of N - 1 (= OTP length) when p, q are generated (2..9, default 6).")(f)
    f = click.option("--e", "e", type=INT, default=None, help="Public exponent (random when left out).")(f)
    f = click.option("--q", "q", type=INT, default=None, help="Second prime of N.")(f)
    f = click.option("--p", "p", type=INT, default=None, help="First prime of N (p, q random when both are left out).")(f)
    return f


def _params(p, q, e, digits, generated):
    """RsaParams from the options; what is missing is drawn with `secrets`."""
    if (p is None) != (q is None):
        missing = "--q" if q is None else "--p"
        raise click.BadParameter("give both --p and --q, or neither", param_hint=f"'{missing}'")
    try:
        if p is None:
            if e is not None:
                raise click.BadParameter("--e needs --p and --q", param_hint="'--e'")
            params = rsaparams.generate_params(6 if digits is None else digits)
            generated.update(p=params.p, q=params.q, e=params.e)
            return params
        if e is None:
            e = rsaparams.random_e(p, q)
            generated["e"] = e
        params = rsaparams.validate_params(p, q, e)
    except InvalidParameter as exc:
        raise batch_io.option_error(exc) from None
    if params.n >= 1 << 32:
        raise click.BadParameter(f"p*q = {params.n} must be below 2^32", param_hint="'--p' / '--q'")
    if digits is not None and digits != params.digits:
        raise click.BadParameter(f"p*q - 1 has {params.digits} digits, not {digits}", param_hint="'--digits'")
    return params


def _random_primitive(degree):
    """A uniformly random primitive polynomial of the degree (rejection sampling)."""
    if not 2 <= degree <= 64:
        raise click.BadParameter(f"must be 2..64, got {degree}", param_hint="'--degree'")
    while True:
        poly = (1 << degree) | (secrets.randbits(degree - 1) << 1) | 1
        if core.lfsr_is_primitive(poly):
            return poly


def _announce(command, generated, shown):
    """Print a command line that repeats this run (only when something was generated)."""
    if not generated:
        return
    parts = ["otpfast", "batch", command]
    for name, value in shown:
        if value is None:
            continue
        text = hex(value) if name in ("--poly", "--state") else str(value)
        parts += [name, text]
    click.echo("generated " + ", ".join(sorted(generated)) + "; repeat with:", err=True)
    click.echo("  " + shlex.join(parts), err=True)


@click.command("rsa-lfsr", epilog=_INSECURE,
               short_help="INSECURE paper RSA-type OTPs, a from an LFSR (study/batch only).")
@_common
@click.option("--poly", type=INT, default=None,
              help="Primitive connection polynomial, e.g. 0x100009 = x^20+x^3+1 (random when left out).")
@click.option("--state", type=INT, default=None, help="First LFSR state, 1 <= S < 2^L (random when left out).")
@click.option("--degree", type=INT, default=None, help="Degree of the random --poly (default 20).")
@click.pass_context
def rsa_lfsr(ctx, p, q, e, digits, count, fmt, out, threads, check, method, poly, state, degree):
    """The paper's RSA-type OTPs a^e mod N, a from an LFSR (INSECURE, PREDICTABLE: study and
    batch work only, never logins).

    Candidates are the LFSR states from --state; one is used iff 1 <= a < N and
    gcd(a, N) = 1. OTPs are zero-padded to the digits of N - 1.
    """
    batch_io.require_for_check(check, **{"--p": p, "--q": q, "--e": e, "--poly": poly, "--state": state})
    batch_io.require_count_or_check(count, check)
    generated = {}
    params = _params(p, q, e, digits, generated)
    if poly is None:
        poly = _random_primitive(20 if degree is None else degree)
        generated["poly"] = poly
    elif degree is not None and degree != poly.bit_length() - 1:
        raise click.BadParameter(f"--poly has degree {poly.bit_length() - 1}", param_hint="'--degree'")
    if state is None and poly.bit_length() >= 2:
        state = 1 + secrets.randbelow((1 << (poly.bit_length() - 1)) - 1)
        generated["state"] = state
    if check is not None:
        otps = batch_io.read_all(check, fmt)
        batch_io.expect_count(count, len(otps))
        verified = call(core.rsa_lfsr_verify, params.n, params.d, poly, state, otps,
                        num_threads=threads, method=method)
        batch_io.report(ctx, verified, len(otps))
    call(core.rsa_lfsr_generate, params.n, params.e, poly, state, 0, num_threads=threads, method=method)
    _announce("rsa-lfsr", generated, [("--p", params.p), ("--q", params.q), ("--e", params.e),
                                      ("--poly", poly), ("--state", state), ("--count", count),
                                      ("--format", fmt)])

    def generate(position, k):
        return core.rsa_lfsr_generate(params.n, params.e, poly, state if position is None else position, k,
                                      num_threads=threads, method=method)

    batch_io.run(generate, count, fmt, out, params.digits)


@click.command("rsa-primroot", epilog=_INSECURE,
               short_help="INSECURE paper RSA-type OTPs, a = g^i mod P (study/batch only).")
@_common
@click.option("--prime", type=INT, default=rsaparams.DEFAULT_PRIME, show_default=True,
              help="The prime P of the stream g^i mod P.")
@click.option("--generator", type=INT, default=None,
              help=f"A primitive root g modulo P (default: the smallest; {rsaparams.DEFAULT_GENERATOR} "
                   f"for P = {rsaparams.DEFAULT_PRIME}).")
@click.option("--start", type=INT, default=None, help="First exponent i (random when left out).")
@click.pass_context
def rsa_primroot(ctx, p, q, e, digits, count, fmt, out, threads, check, method, prime, generator, start):
    """The paper's RSA-type OTPs a^e mod N, a = g^i mod P for i = START, START+1, ...
    (INSECURE, PREDICTABLE: study and batch work only, never logins).

    A power is used iff 1 <= a < N and gcd(a, N) = 1. OTPs are zero-padded to the digits of N - 1.
    """
    batch_io.require_for_check(check, **{"--p": p, "--q": q, "--e": e, "--start": start})
    batch_io.require_count_or_check(count, check)
    generated = {}
    params = _params(p, q, e, digits, generated)
    if generator is None:
        if prime == rsaparams.DEFAULT_PRIME:
            generator = rsaparams.DEFAULT_GENERATOR
        else:
            generator = call(rsaparams.smallest_primitive_root, prime)
    if start is None:
        start = secrets.randbelow(max(prime - 1, 1))
        generated["start"] = start
    if check is not None:
        otps = batch_io.read_all(check, fmt)
        batch_io.expect_count(count, len(otps))
        verified = call(core.rsa_primroot_verify, params.n, params.d, prime, generator, start, otps,
                        num_threads=threads, method=method)
        batch_io.report(ctx, verified, len(otps))
    call(core.rsa_primroot_generate, params.n, params.e, prime, generator, start, 0,
         num_threads=threads, method=method)
    _announce("rsa-primroot", generated, [("--p", params.p), ("--q", params.q), ("--e", params.e),
                                          ("--prime", prime), ("--generator", generator),
                                          ("--start", start), ("--count", count), ("--format", fmt)])

    def generate(position, k):
        return core.rsa_primroot_generate(params.n, params.e, prime, generator,
                                          start if position is None else position, k,
                                          num_threads=threads, method=method)

    batch_io.run(generate, count, fmt, out, params.digits)
