"""Build script: compiles cco/_fast/*.pyx with Cython and bundles the default config.

If the compiler or Cython is missing the package still installs and runs on its pure-Python twin
(cco/_fast/*_py.py); set CCO_REQUIRE_COMPILED=1 to make a failed build an error instead.
"""
import os
import shutil
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
FAST_MODULES = ["sse_c", "key_c", "lru_c", "hit_c"]


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # compiler missing: fall back to the pure twin
            if os.environ.get("CCO_REQUIRE_COMPILED") == "1":
                raise
            print(f"warning: cco/_fast not compiled ({exc}); the pure-Python implementation will be used")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            if os.environ.get("CCO_REQUIRE_COMPILED") == "1":
                raise
            print(f"warning: {ext.name} not compiled ({exc})")


class BuildPyWithDefaults(build_py):
    """Ships config/*.json|toml inside the package as the bundled default configuration."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "cco" / "_defaults"
        target.mkdir(parents=True, exist_ok=True)
        for src in (HERE / "config").iterdir():
            if src.suffix in (".json", ".toml"):
                shutil.copy2(src, target / src.name)


def extensions():
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    exts = [Extension(f"cco._fast.{name}", [f"cco/_fast/{name}.pyx"], include_dirs=["cco/_fast"])
            for name in FAST_MODULES]
    return cythonize(exts, language_level=3, quiet=True)


setup(
    packages=find_packages(include=["cco", "cco.*"]),
    package_data={"cco._fast": ["*.pyi", "*.pxd", "*.pyx", "*.h"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithDefaults},
)
