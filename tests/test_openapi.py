"""The OpenAPI document is valid OpenAPI 3.1 and true: schemathesis, run against the real server,
finds no 5xx and no answer that differs from what the document says.

Two servers, each as users run it (gunicorn, SQLite), answered by a scripted LLM that always says
"ok TERMINATE" so that the runs the fuzzer starts end at once (and `limits.max_run_seconds` caps
any that would not): one without sign-in, where every generated `user_id` reaches the handlers,
and one with API keys, where the fuzzer signs in and its `ignored_auth` check takes the
credentials away to see them enforced. Schemathesis runs every check on every operation, with a
bounded number of examples per operation and a fixed seed; see tests/support/schemathesis.toml
and schemathesis_hooks.py for the two checks it runs as this server's rules require.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.auth import create_key
from tests.support.scripted_llm import ScriptedLLM
from tests.support.server import RunningServer, start_server

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "tests" / "support"
MAX_EXAMPLES = 25
SEED = 20261201
FUZZ_USER = "fuzz@example.com"


@pytest.fixture(scope="module")
def ok_llm() -> Iterator[ScriptedLLM]:
    llm = ScriptedLLM(responder=lambda _body: "ok TERMINATE").start()
    yield llm
    llm.stop()


def _fuzz_server(workdir: Path, llm: ScriptedLLM, mode: str) -> RunningServer:
    config = {
        "limits": {"max_run_seconds": 5, "per_user": {"requests_per_minute": 0}},
        "runs": {"input_timeout_s": 2},
    }
    (workdir / "config.json").write_text(json.dumps(config))
    env = {"OPENAI_API_KEY": "sk-test-fuzz", "OPENAI_BASE_URL": llm.base_url, "AUTOBOTS_AUTH__MODE": mode}
    return start_server(workdir, env=env, config=workdir / "config.json")


@pytest.fixture(scope="module")
def open_server(ok_llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = _fuzz_server(tmp_path_factory.mktemp("fuzz-open"), ok_llm, "none")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def token_server(
    ok_llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    workdir = tmp_path_factory.mktemp("fuzz-token")
    key = create_key(workdir, FUZZ_USER)
    srv = _fuzz_server(workdir, ok_llm, "token")
    yield srv, key
    srv.stop()


def test_the_document_is_valid_openapi_3_1(open_server: RunningServer, token_server) -> None:
    from openapi_spec_validator import OpenAPIV31SpecValidator

    for srv in (open_server, token_server[0]):
        doc = requests.get(srv.url + "/api/openapi.json", timeout=30).json()
        assert doc["openapi"].startswith("3.1")
        OpenAPIV31SpecValidator(doc).validate()
        assert doc["components"]["securitySchemes"]["bearer"] == {
            "type": "http",
            "scheme": "bearer",
            "description": doc["components"]["securitySchemes"]["bearer"]["description"],
        }
        assert "ValidationErrorModel" not in doc["components"]["schemas"]
        for path, item in doc["paths"].items():
            for method, operation in item.items():
                bad = operation["responses"].get("400")
                if bad is not None:  # the envelope, as the server answers, never a list
                    schema = bad["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path)
        events = doc["paths"]["/api/runs/{run_id}/events"]["get"]["responses"]
        assert {"200", "400", "401", "404"} <= set(events)
        assert "text/event-stream" in events["200"]["content"]
        gallery = doc["paths"]["/api/gallery"]["get"]["responses"]["200"]["content"]["application/json"]
        listed = doc["components"]["schemas"][gallery["schema"]["$ref"].rsplit("/", 1)[-1]]
        assert len(listed["anyOf"]) == 2  # the list, or the old clients' one item by gallery_id
        assert "/api/gallery/{gallery_id}" in doc["paths"]

    open_doc = requests.get(open_server.url + "/api/openapi.json", timeout=30).json()
    token_doc = requests.get(token_server[0].url + "/api/openapi.json", timeout=30).json()
    assert "security" not in open_doc["paths"]["/api/sessions"]["get"]  # nobody signs in there
    signed = token_doc["paths"]["/api/sessions"]["get"]
    assert signed["security"] == [{"bearer": []}, {"apiKey": []}] and "401" in signed["responses"]
    assert "security" not in token_doc["paths"]["/api/gallery"]["get"]  # the public gallery
    assert "security" not in token_doc["paths"]["/api/health"]["get"]


def test_a_405_says_which_methods_are_allowed(open_server: RunningServer) -> None:
    r = requests.delete(open_server.url + "/api/messages", timeout=30)
    assert r.status_code == 405 and r.json()["status"] is False
    assert set(r.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    r = requests.post(open_server.url + "/api/runs/some-run/events", timeout=30)
    assert r.status_code == 405 and "GET" in r.headers["Allow"]


def _schemathesis(srv: RunningServer, workdir: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(SUPPORT / "schemathesis.toml"),
        "run",
        f"{srv.url}/api/openapi.json",
        "--url",
        srv.url,
        "--checks",
        "all",
        # run as `negative_data_rejection_lax_types` (schemathesis_hooks.py)
        "--exclude-checks",
        "negative_data_rejection",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--request-timeout",
        "30",
        # One worker thread: CPython 3.11's ast.parse is not safe from several threads at once
        # (Hypothesis parses lambdas' source: "AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        *extra,
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    open_server: RunningServer, token_server, tmp_path: Path
) -> None:
    srv, key = token_server
    started = time.monotonic()
    (tmp_path / "open").mkdir()
    (tmp_path / "token").mkdir()
    runs = {
        "auth.mode none": _schemathesis(open_server, tmp_path / "open"),
        "auth.mode token": _schemathesis(srv, tmp_path / "token", "--header", f"Authorization: Bearer {key}"),
    }
    outputs = {name: proc.communicate(timeout=300)[0] for name, proc in runs.items()}
    took = time.monotonic() - started
    for name, proc in runs.items():
        out = outputs[name]
        summary = [line for line in out.splitlines() if "generated" in line or " in " in line][-2:]
        print(f"schemathesis, {name}: {' / '.join(s.strip() for s in summary)}")
        assert proc.returncode == 0, f"schemathesis against the server with {name}:\n{out}"
        selected = re.search(r"Selected: (\d+)/(\d+)", out)
        tested = re.search(r"Tested: (\d+)", out)
        assert selected and tested and selected[1] == selected[2] == tested[1], out  # every operation
    print(f"both schemathesis runs took {took:.1f} s")
    for server in (open_server, srv):
        assert "Traceback" not in server.log()
