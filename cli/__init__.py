"""otpfast command-line interface (installed as the ``otpfast`` command)."""
