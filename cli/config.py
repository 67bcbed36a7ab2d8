"""``--config FILE``: a TOML file of a server command's options.

Keys are the command's long option names without the dashes (``listen``,
``radius-secret-file``, ``verbose = true``); a value goes through the option's own type, so
the file is checked exactly as the command line is. The file fills click's ``default_map``:
the command line (and an ``OTPFAST_*`` environment variable) overrides it, and an option
absent from both keeps its default. An unknown key or a bad value exits 2 naming
``--config`` and the key. SIGHUP re-reads the file (``reload_values``).
"""
import tomllib

import click

_META = "otpfast.config"      # ctx.meta key: the --config path (None: no file)


def _options(command):
    """long option name without dashes -> click parameter, for every option but --config/--help."""
    names = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in ("config", "help"):
            continue
        long = [opt for opt in param.opts if opt.startswith("--")]
        if long:
            names[long[0][2:]] = param
    return names


def read_config(ctx, command, path):
    """Parameter name -> value of every key in ``path`` (for ``default_map``), each checked
    by the option's type; BadParameter('--config') names the file and the key."""
    def bad(message):
        return click.BadParameter(f"{path}: {message}", ctx=ctx, param_hint="'--config'")

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise bad(f"cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise bad(f"not TOML: {exc}") from None
    options = _options(command)
    values = {}
    for key, value in data.items():
        param = options.get(key)
        if param is None:
            raise bad(f"unknown key {key!r} (keys are the long option names of "
                      f"`otpfast {command.name}`, without the dashes)")
        if isinstance(value, (dict, list)):
            raise bad(f"{key}: expected a single value, not a table or array")
        if param.is_flag and not isinstance(value, bool):
            raise bad(f"{key}: expected true or false")
        try:
            param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise bad(f"{key}: {exc.message}") from None
        values[param.name] = value
    return values


def _load(ctx, param, path):
    if path is not None:
        ctx.default_map = {**(ctx.default_map or {}), **read_config(ctx, ctx.command, path)}
    ctx.meta[_META] = path


def reload_values(ctx):
    """Every parameter's value as a fresh start would see it now: what came from the command
    line or the environment stays, the rest is re-read from the --config file (else the
    default). BadParameter('--config') if the file is now bad."""
    path = ctx.meta.get(_META)
    from_file = read_config(ctx, ctx.command, path) if path is not None else {}
    kept = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    values, previous = {}, ctx.default_map
    ctx.default_map = from_file      # the file as it is now, then the declared default
    try:
        for param in _options(ctx.command).values():
            if ctx.get_parameter_source(param.name) in kept:
                values[param.name] = ctx.params[param.name]
            else:
                values[param.name] = param.process_value(ctx, param.consume_value(ctx, {})[0])
    finally:
        ctx.default_map = previous
    return values


config_option = click.option(
    "--config", type=click.Path(dir_okay=False, path_type=str), default=None, is_eager=True,
    expose_value=False, callback=_load, metavar="FILE",
    help="TOML file of this command's options (keys: the long option names without dashes); "
         "the command line overrides it; SIGHUP re-reads it.")
