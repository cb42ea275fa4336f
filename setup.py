"""The one compiled part: the KV-event subscribers' native fast lane (optional: without a C
compiler the package installs without it, and the subscribers use their Python path)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sluice.datalayer.kvevents._lane",
            ["src/sluice/datalayer/kvevents/_lane.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
