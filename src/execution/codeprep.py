"""Turning an AutoGen code block into the command that runs it inside a sandbox.

The host never writes code into the work dir: the sandbox is free to plant
symlinks there, and a host-side (root) write through one would overwrite a host
file. Instead a tiny POSIX sh bootstrap writes the code to a file *inside* the
sandbox, as the sandbox user, then execs the interpreter on it. The code reaches
the bootstrap on its stdin where the executor has a pipe to the sandbox (local
executors: nothing shows up in the host's process list), else as command-line
arguments (Docker exec, where argv is only visible inside the container). Temporary code files go to the sandbox's private
/tmp, so they never show up among the user's files.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass

from .request import check_relative_subpath
from .settings import SANDBOX_WORKDIR

# Language (lower case, as the markdown extractor reports it) -> (interpreter, file suffix).
LANGUAGES: dict[str, tuple[str, str]] = {
    "python": ("python3", "py"),
    "py": ("python3", "py"),
    "python3": ("python3", "py"),
    "bash": ("bash", "sh"),
    "sh": ("sh", "sh"),
    "shell": ("sh", "sh"),
}

_BARE_FILENAME_RE = re.compile(r"^[\w./-]*\w\.[A-Za-z0-9]{1,8}$")

# The kernel caps one argv string at 128 KiB (MAX_ARG_STRLEN, NUL included); chunks
# of 30,000 characters stay below it even if every character takes 4 bytes in UTF-8.
_CHUNK_CHARS = 30_000
# All argv strings together must fit ARG_MAX (2 MiB with the default 8 MiB stack).
MAX_CODE_BYTES = 1024 * 1024

# $1: file to write, $2: interpreter, rest: the code in chunks. printf's format is a
# constant, so nothing in the code is ever interpreted by the shell.
BOOTSTRAP = (
    "f=$1; i=$2; shift 2; d=${f%/*}; "
    '{ [ -d "$d" ] || mkdir -p "$d"; } && printf %s "$@" > "$f" || '
    '{ echo "sandbox: cannot write $f" >&2; exit 126; }; '
    'exec "$i" "$f"'
)
# $1: file to write, $2: interpreter; the code is on stdin. The interpreter then gets
# an empty stdin, as with the argv form.
BOOTSTRAP_STDIN = (
    "f=$1; i=$2; d=${f%/*}; "
    '{ [ -d "$d" ] || mkdir -p "$d"; } && cat > "$f" || '
    '{ echo "sandbox: cannot write $f" >&2; exit 126; }; '
    'exec "$i" "$f" </dev/null'
)


@dataclass(frozen=True)
class PreparedBlock:
    """A block ready to run: the in-sandbox argv, or the reason it cannot run."""

    language: str
    argv: list[str] | None
    code_path: str | None
    error: str | None = None
    stdin: bytes | None = None


def _filename_from_comment(code: str) -> str | None:
    """The file name an LLM asked for with a first-line comment (``# filename: x.py``).

    AutoGen also takes a bare ``# x.py``; unlike AutoGen, a bare comment only counts
    when it looks like a file name, so ``# compute the sum`` does not create a file.
    """
    first = code.split("\n", 1)[0].strip()
    for prefix in ("# filename:", "// filename:"):
        if first.startswith(prefix):
            return first[len(prefix) :].strip() or None
    for prefix in ("# ", "// "):
        if first.startswith(prefix):
            name = first[len(prefix) :].strip()
            if _BARE_FILENAME_RE.match(name):
                return name
    return None


# The name a bare last expression's value is kept in while it is shown (see show_last_value).
LAST_VALUE = "_autobots_last_value"


def show_last_value(code: str) -> str:
    """Python code whose last statement is a bare expression, rewritten to print its value
    (its repr) unless it is None, as a notebook or the REPL shows it.

    Small models often end a block with `sum(...)` instead of `print(sum(...))`; run as a
    script that prints nothing, and the model then guesses the value it never saw. Only the
    expression's own text is wrapped, in place, so every line keeps its number in a traceback.
    The code is parsed (never run) here; code that does not parse is left as it is for Python
    to report. A call to print() (its value is None) prints as it would anyway.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return code
    last = tree.body[-1]
    if last.end_lineno is None or last.end_col_offset is None:
        return code
    value = last.value
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "print":
        return code
    # ast's offsets count UTF-8 bytes within a line.
    raw = code.encode("utf-8")
    lines = raw.split(b"\n")
    start = sum(len(line) + 1 for line in lines[: last.lineno - 1]) + last.col_offset
    stop = sum(len(line) + 1 for line in lines[: last.end_lineno - 1]) + last.end_col_offset
    # What follows on the expression's last line (a comment, a ';') stays on that line.
    rest, _, later = raw[stop:].partition(b"\n")
    name = LAST_VALUE.encode()
    shown = b"%s = (%s)%s\nif %s is not None:\n    print(repr(%s))\n" % (
        name,
        raw[start:stop],
        rest,
        name,
        name,
    )
    return (raw[:start] + shown + later).decode("utf-8")


def prepare_block(
    language: str,
    code: str,
    work_dir: str = SANDBOX_WORKDIR,
    tmp_dir: str = "/tmp",
    via_stdin: bool = False,
) -> PreparedBlock:
    """Map a block to its interpreter and the bootstrap argv, validating what the LLM wrote.

    ``work_dir`` and ``tmp_dir`` are the paths as the code sees them: the sandboxes'
    /workspace and private /tmp, or host paths for the unsandboxed executor.
    """
    lang = language.lower().strip()
    if lang not in LANGUAGES:
        shown = lang or "(none given)"
        return PreparedBlock(lang, None, None, f"Unsupported language {shown}\n")
    interpreter, suffix = LANGUAGES[lang]
    if "\x00" in code:
        return PreparedBlock(lang, None, None, "The code contains a NUL character and cannot be run.\n")
    if len(code.encode("utf-8")) > MAX_CODE_BYTES:
        return PreparedBlock(lang, None, None, f"The code block is larger than {MAX_CODE_BYTES} bytes.\n")

    requested = _filename_from_comment(code)
    if requested is not None:
        try:
            code_path = f"{work_dir}/{check_relative_subpath(requested)}"
        except ValueError:
            return PreparedBlock(lang, None, None, "Filename is not in the workspace\n")
    else:
        if interpreter == "python3":  # a file the model named is the user's: left as written
            code = show_last_value(code)
        digest = hashlib.md5(code.encode("utf-8"), usedforsecurity=False).hexdigest()
        code_path = f"{tmp_dir}/tmp_code_{digest}.{suffix}"

    if via_stdin:
        argv = ["sh", "-c", BOOTSTRAP_STDIN, "sandbox-bootstrap", code_path, interpreter]
        return PreparedBlock(lang, argv, code_path, stdin=code.encode("utf-8"))
    chunks = [code[i : i + _CHUNK_CHARS] for i in range(0, len(code), _CHUNK_CHARS)] or [""]
    argv = ["sh", "-c", BOOTSTRAP, "sandbox-bootstrap", code_path, interpreter, *chunks]
    return PreparedBlock(lang, argv, code_path)
