"""Pure-Python twin of the hash kernels in _core_hash.pxi."""
__all__ = []
