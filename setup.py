"""The compiled parts, each optional (without a C compiler the package installs without them,
and the Python path they stand in for serves): the KV-event subscribers' native fast lane, and
the tracer's native parts (the span builder, the OTLP encoder)."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        Extension(
            "sluice.datalayer.kvevents._lane",
            ["src/sluice/datalayer/kvevents/_lane.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
        Extension(
            "sluice.tracing._spans",
            ["src/sluice/tracing/_spans.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
        Extension(
            "sluice.tracing._otlp",
            ["src/sluice/tracing/_otlp.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
    ]
)
