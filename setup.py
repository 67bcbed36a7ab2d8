"""Build the native core (otpfast._core) and, where libsodium-dev is installed, the optional
ristretto255 extension of threshold tokens (otpfast._ristretto). Metadata lives in pyproject.toml.

Environment switches:
  OTPFAST_NO_EXTENSIONS=1  build no extension (pure-Python install)
  OTPFAST_NO_SODIUM=1      skip otpfast._ristretto even if libsodium-dev is installed
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


def _compiles(src, flags):
    """True if the C compiler builds and links src with flags."""
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, "probe.c")
        with open(c, "w") as f:
            f.write(src)
        try:
            r = subprocess.run([cc, c, "-o", os.path.join(tmp, "probe"), *flags],
                               capture_output=True)
        except OSError:
            return False
    return r.returncode == 0


def _openmp_flags():
    if _flag("OTPFAST_NO_OPENMP"):
        return []
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    return ["-fopenmp"] if _compiles(src, ["-fopenmp"]) else []


def _have_sodium():
    if _flag("OTPFAST_NO_SODIUM"):
        return False
    src = "#include <sodium.h>\nint main(void){return sodium_init() < 0;}\n"
    return _compiles(src, ["-lsodium"])


def _extensions():
    if _flag("OTPFAST_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = _flag("OTPFAST_CYTHON_DEBUG")
    omp = _openmp_flags()
    macros = [("CYTHON_TRACE_NOGIL", "1")] if debug else []
    common = dict(extra_compile_args=["-O3", "-fno-strict-aliasing", *omp],
                  extra_link_args=omp, define_macros=macros)
    exts = [Extension(
        "otpfast._core",
        ["src/otpfast/_core.pyx"],
        depends=["src/otpfast/_core_kernels.h", "src/otpfast/_core_hash.pxi",
                 "src/otpfast/_core_store.pxi"],
        libraries=["crypto"],
        **common,
    )]
    if _have_sodium():
        exts.append(Extension("otpfast._ristretto", ["src/otpfast/_ristretto.pyx"],
                              libraries=["sodium"], **common))
    else:
        print("otpfast: libsodium not found (or OTPFAST_NO_SODIUM=1): skipping otpfast._ristretto; "
              "threshold (tprf) tokens need libsodium (Debian: libsodium-dev to build, libsodium23 to run)",
              file=sys.stderr)
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
    return cythonize(exts, compiler_directives=directives)


setup(ext_modules=_extensions())
