"""Build of the one C extension, ``app.core._jpeg8`` (the project's metadata is in pyproject.toml).

It is optional: where no C compiler is available the install still succeeds and every JPEG is decoded
by Pillow, as before (``app.core.jpeg8.AVAILABLE`` is then False; the service logs it when it is ready).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "app.core._jpeg8",
            ["app/core/_jpeg8.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            libraries=["pthread"],
            optional=True,
        )
    ]
)
