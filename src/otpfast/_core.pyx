# Cython core; see _core_py.py for the spec.
OPENMP_ENABLED = False
include "_core_hash.pxi"
