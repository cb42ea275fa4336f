"""The llama.cpp build cache: where an entry lives, when it counts as built, that concurrent
builds build once, and that a failing step says which step, where the log is, and how it ended.
(The real build runs in `make engines`; the real-engine tests use what it produced.)"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sluice.bench.engines import build
from sluice.bench.engines.build import EngineBuildError, LlamaCppInstall


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "sluice" / "llama.cpp"


def fake_build(final: Path, say: object) -> LlamaCppInstall:
    """Stands in for cmake: lays out a complete entry the way `_build` does (work dir, rename)."""
    work = final.parent / f".work-{final.name}"
    install = build._layout(work)
    for path in (install.server, install.quantize, install.model):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    (work / "recipe.json").write_text("{}")
    time.sleep(0.2)  # long enough for a second builder to arrive and wait on the lock
    work.rename(final)
    return build._layout(final)


def test_the_entry_is_keyed_by_version_and_recipe_outside_the_clone(cache: Path) -> None:
    entry = build.install_dir()
    assert entry.parent == cache
    assert entry.name == f"{build.LLAMA_CPP_VERSION}-{build.recipe_key()}"
    assert not entry.is_relative_to(Path(__file__).resolve().parents[2])


def test_another_cpu_gets_another_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    # -march=native: a binary built for one CPU's instruction sets may not run on another.
    monkeypatch.setattr(build, "_cpu_flags", lambda: "sse2 avx2")
    with_avx2 = build.recipe_key()
    monkeypatch.setattr(build, "_cpu_flags", lambda: "sse2")
    assert build.recipe_key() != with_avx2


def test_a_partial_entry_is_not_an_install(cache: Path) -> None:
    assert build.find_install() is None
    install = build._layout(build.install_dir())
    install.server.parent.mkdir(parents=True)
    install.server.write_text("")
    assert build.find_install() is None, "no model, no recipe.json: not finished"


def test_two_concurrent_builds_build_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def counting_build(final: Path, say: object) -> LlamaCppInstall:
        calls.append(final)
        return fake_build(final, say)

    monkeypatch.setattr(build, "_build", counting_build)
    found: list[LlamaCppInstall] = []
    said: list[str] = []
    workers = [
        threading.Thread(target=lambda: found.append(build.ensure_installed(said.append)))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(calls) == 1
    assert found[0] == found[1] == build.find_install()
    assert any("waiting" in line for line in said)


def test_a_failing_step_names_itself_its_log_and_its_last_lines(tmp_path: Path) -> None:
    log_path = tmp_path / "build.log"
    with log_path.open("w") as log:
        run = build._runner(log, log_path)
        run("say hello", [sys.executable, "-c", "print('hello')"])
        with pytest.raises(EngineBuildError) as failure:
            script = "import sys; print('compiling ggml.c'); sys.exit(3)"
            run("compile llama.cpp (cmake --build)", [sys.executable, "-c", script])
    message = str(failure.value)
    assert "step 'compile llama.cpp (cmake --build)' (exit 3)" in message
    assert str(log_path) in message
    assert "| compiling ggml.c" in message


def test_without_a_compiler_the_error_says_which_package_brings_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EngineBuildError, match="build-essential"):
        build._compilers()


def test_on_x86_the_build_leaves_amx_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # ggml's AMX matmul dies with SIGSEGV in this llama.cpp version's first decode
    monkeypatch.setattr(build.platform, "machine", lambda: "x86_64")
    flags = build.cmake_flags()
    for language in ("C", "CXX"):
        (given,) = [f for f in flags if f.startswith(f"-DCMAKE_{language}_FLAGS=")]
        assert {"-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"} <= set(
            given.split("=")[1].split()
        )
    assert "-DGGML_NATIVE=ON" in flags
    monkeypatch.setattr(build.platform, "machine", lambda: "aarch64")
    assert not any("amx" in f for f in build.cmake_flags())


def _install_with_server(tmp_path: Path, script: str) -> LlamaCppInstall:
    server = tmp_path / "llama-server"
    server.write_text(f"#!{sys.executable}\n{script}\n")
    server.chmod(0o755)
    model = tmp_path / "model.gguf"
    return LlamaCppInstall(tmp_path, server, server, model, model)


def test_a_server_that_dies_loading_the_model_fails_the_build(tmp_path: Path) -> None:
    install = _install_with_server(
        tmp_path,
        "import os, signal; print('load_model: loading'); os.kill(os.getpid(), signal.SIGSEGV)",
    )
    log_path = tmp_path / "build.log"
    with log_path.open("w") as log, pytest.raises(EngineBuildError) as failure:
        build._smoke(install, log, log_path)
    message = str(failure.value)
    assert "check that llama-server serves the model" in message
    assert "(exit -11)" in message
    assert "| load_model: loading" in message


def test_a_server_that_answers_health_passes_the_check(tmp_path: Path) -> None:
    serve = (
        "import sys, http.server\n"
        "port = int(sys.argv[sys.argv.index('--port') + 1])\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200 if self.path == '/health' else 404); self.end_headers()\n"
        "http.server.HTTPServer(('127.0.0.1', port), H).serve_forever()"
    )
    install = _install_with_server(tmp_path, serve)
    log_path = tmp_path / "build.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        build._smoke(install, log, log_path)
    assert time.monotonic() - started < build.SMOKE_TIMEOUT_S
    assert "--port" in log_path.read_text()


def test_host_code_is_compiled_at_o1_and_ggml_at_release(tmp_path: Path) -> None:
    """The hook as the build passes it, on a project laid out as llama.cpp is: a `ggml/`
    library and host code beside it (configured by the real cmake, nothing compiled)."""
    source = tmp_path / "src"
    (source / "ggml").mkdir(parents=True)
    (source / "tools" / "server").mkdir(parents=True)
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.19)\nproject(demo C CXX)\n"
        "add_subdirectory(ggml)\nadd_subdirectory(tools/server)\n"
    )
    (source / "ggml" / "CMakeLists.txt").write_text("add_library(kernels STATIC ops.cpp)\n")
    (source / "ggml" / "ops.cpp").write_text("int op() { return 1; }\n")
    server = source / "tools" / "server"
    server.joinpath("CMakeLists.txt").write_text(
        "add_executable(server server.cpp glue.c)\ntarget_link_libraries(server kernels)\n"
    )
    server.joinpath("server.cpp").write_text("int op();\nint main() { return op(); }\n")
    server.joinpath("glue.c").write_text("int glue(void) { return 0; }\n")
    hook = tmp_path / "host_code.cmake"
    hook.write_text(build.HOST_CODE_CMAKE)
    out = tmp_path / "build"
    configure = [build._tool("cmake"), "-S", str(source), "-B", str(out), "-G", "Ninja"]
    configure += [f"-DCMAKE_MAKE_PROGRAM={build._tool('ninja')}", "-DCMAKE_BUILD_TYPE=Release"]
    configure += ["-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", f"-DCMAKE_PROJECT_INCLUDE={hook}"]
    subprocess.run(configure, check=True, capture_output=True)
    commands = {
        Path(entry["file"]).name: entry["command"].split()
        for entry in json.loads((out / "compile_commands.json").read_text())
    }

    def level(name: str) -> str:  # the last -O wins
        return [flag for flag in commands[name] if flag.startswith("-O")][-1]

    assert level("ops.cpp") == "-O3"  # ggml's kernels: Release
    assert level("server.cpp") == "-O1"  # host C++
    assert level("glue.c") == "-O3"  # C is left as it was


def test_another_host_code_hook_gets_another_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    before = build.install_dir()
    monkeypatch.setattr(build, "HOST_CODE_CMAKE", build.HOST_CODE_CMAKE.replace("-O1", "-O2"))
    assert build.install_dir() != before
