# HMAC/hash batch kernels (included by _core.pyx).
