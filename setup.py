"""Build the native core (otpfast._core). Metadata lives in pyproject.toml.

Environment switches:
  OTPFAST_NO_EXTENSIONS=1  build no extension (pure-Python install)
  OTPFAST_NO_OPENMP=1      build without OpenMP even if the compiler has it
  OTPFAST_CYTHON_DEBUG=1   boundscheck, linetrace, CYTHON_TRACE_NOGIL
"""
import os
import subprocess
import sys
import tempfile

from setuptools import setup

def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _openmp_flags():
    if _flag("OTPFAST_NO_OPENMP"):
        return []
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, "probe.c")
        with open(c, "w") as f:
            f.write(src)
        try:
            r = subprocess.run([cc, "-fopenmp", c, "-o", os.path.join(tmp, "probe")],
                               capture_output=True)
        except OSError:
            return []
    return ["-fopenmp"] if r.returncode == 0 else []


def _extensions():
    if _flag("OTPFAST_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = _flag("OTPFAST_CYTHON_DEBUG")
    omp = _openmp_flags()
    macros = [("CYTHON_TRACE_NOGIL", "1")] if debug else []
    ext = Extension(
        "otpfast._core",
        ["src/otpfast/_core.pyx"],
        depends=["src/otpfast/_core_kernels.h", "src/otpfast/_core_hash.pxi",
                 "src/otpfast/_core_ristretto.pxi", "src/otpfast/_core_store.pxi"],
        libraries=["crypto", "sodium"],
        extra_compile_args=["-O3", "-fno-strict-aliasing", *omp],
        extra_link_args=omp,
        define_macros=macros,
    )
    directives = dict(
        language_level=3,
        embedsignature=True,
        freethreading_compatible=True,
        boundscheck=debug,
        wraparound=False,
        cdivision=True,
        initializedcheck=False,
        linetrace=debug,
    )
    return cythonize([ext], compiler_directives=directives)


setup(ext_modules=_extensions())
