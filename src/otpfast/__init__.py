"""otpfast: fast, secure one-time passwords with a native core.

No side effects at import: nothing here loads asyncio, sockets or click.
"""
__version__ = "0.1.0"

from .errors import InvalidToken, OtpfastError

__all__ = ["__version__", "OtpfastError", "InvalidToken"]
