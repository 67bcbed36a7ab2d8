"""``otpfast lfsr primitive|is-primitive``: primitive polynomials over GF(2)."""
import click

from otpfast import core
from otpfast.errors import InvalidParameter
from otpfast_cli.options import INT, bad_parameter


@click.group("lfsr")
def lfsr_group():
    """LFSR connection polynomials over GF(2) (x^20+x^3+1 is written 0x100009)."""


@lfsr_group.command("primitive")
@click.option("--degree", type=INT, required=True, help="Degree L (2..64; --all up to 28).")
@click.option("--count", "show_count", is_flag=True, help="Print how many there are: phi(2^L-1)/L.")
@click.option("--index", type=INT, default=None, help="Print the K-th one (from 0, increasing order).")
@click.option("--all", "show_all", is_flag=True, help="Print all of them in increasing order, one per line.")
def primitive(degree, show_count, index, show_all):
    """Primitive polynomials of degree L: how many, the K-th, or all (hex, one per line)."""
    if show_count + show_all + (index is not None) != 1:
        raise click.UsageError("give exactly one of --count, --index K, --all")
    try:
        if show_count:
            click.echo(core.lfsr_count_primitive(degree))
        elif index is not None:
            click.echo(hex(core.lfsr_primitive_at(degree, index)))
        else:
            polys = core.lfsr_primitive_all(degree)
            click.open_file("-", "wb").write("".join(f"{p:#x}\n" for p in polys).encode())
    except InvalidParameter as exc:
        if exc.field == "k":
            exc = InvalidParameter("index", exc.message)
        raise bad_parameter(exc) from None


@lfsr_group.command("is-primitive")
@click.argument("poly", type=INT)
@click.pass_context
def is_primitive(ctx, poly):
    """Exit 0 if POLY (decimal or 0x-hex, bits 0 and L set) is primitive, 1 if not."""
    try:
        result = core.lfsr_is_primitive(poly)
    except InvalidParameter as exc:
        raise click.BadParameter(exc.message, param_hint="'POLY'") from None
    click.echo("primitive" if result else "not primitive")
    ctx.exit(0 if result else 1)
