"""``HOST:PORT`` as printed and logged: IPv6 hosts in brackets (``[::1]:8443``), so the
port cannot be read as part of the address and the text parses back as given."""


def format_address(host, port) -> str:
    """``host:port``; ``[host]:port`` for an IPv6 address (any host containing ':')."""
    host = str(host)
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"
