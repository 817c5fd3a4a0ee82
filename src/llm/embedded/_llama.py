"""The model as the server runs it: a ``Llama`` that counts, reports progress and can be stopped.

Runs in the server process (no autobots imports); llama.cpp is imported only when the class is
made, after ``_threads.configure_process`` (OpenMP reads its wait policy once, when loaded).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Generator, Sequence
from typing import Any


class GenerationCancelled(Exception):
    """The client of a generation went away while its prompt was being read."""


def make_llama_class() -> type:
    """A ``Llama`` that counts what it does and can be stopped from another thread.

    ``_create_completion`` reports usage only on its non-streaming path; both paths drive
    ``generate`` with the full prompt token list and stop at the first end-of-generation
    token without appending it, so counting here matches the non-streaming figures exactly.

    ``cancel`` is set by the request handler for the duration of one generation (requests
    run one at a time under llama_cpp.server's lock, so one attribute suffices): once the
    event is set, generation ends after the current token, and prompt reading stops before
    the next ``n_batch`` tokens (``GenerationCancelled``).  llama.cpp cannot be interrupted
    inside a batch, so that is the finest grain there is.
    """
    import llama_cpp

    class MeteredLlama(llama_cpp.Llama):
        last_usage: tuple[int, int] = (0, 0)
        cancel: threading.Event | None = None
        # The request being served (a _queue.Entry), told of its progress; None: nobody asks.
        entry: Any = None
        # Sets the thread count before each evaluation (see _threads.py); None: as loaded.
        governor: Any = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Counters since load, read by /autobots/health; plain ints, written by the one
            # generating thread.  "prompt_tokens" is what requests sent, "prompt_tokens_evaluated"
            # what llama.cpp actually had to read after the prefix/prompt-cache reuse.
            self.stats = {
                "generations": 0,
                "cancelled": 0,
                "prompt_tokens": 0,
                "prompt_tokens_evaluated": 0,
                "completion_tokens": 0,
            }
            self._reading_prompt = False

        def _cancelled(self) -> bool:
            return self.cancel is not None and self.cancel.is_set()

        def eval(self, tokens: Any) -> None:
            # Fed one batch at a time (exactly what the stock eval does in its own loop), so a
            # long prompt whose client left stops within one batch, not after the whole prompt.
            if len(tokens) == 0:
                super().eval(tokens)  # keeps the stock side effect (trims the KV cache)
                return
            step = max(1, int(self.n_batch))
            for i in range(0, len(tokens), step):
                if self._reading_prompt and self._cancelled():
                    self.stats["cancelled"] += 1
                    raise GenerationCancelled("the client went away")
                batch = tokens[i : i + step]
                if self.governor is not None:
                    self.governor.before_eval(self.ctx)
                super().eval(batch)
                if self._reading_prompt:
                    self.stats["prompt_tokens_evaluated"] += len(batch)

        def generate(
            self, tokens: Sequence[int], *args: Any, **kwargs: Any
        ) -> Generator[int, Sequence[int] | None, None]:
            prompt_tokens = len(tokens)
            completion_tokens = 0
            self.last_usage = (prompt_tokens, 0)
            self.stats["generations"] += 1
            self.stats["prompt_tokens"] += prompt_tokens
            entry = self.entry
            evaluated_before = self.stats["prompt_tokens_evaluated"]
            if entry is not None:
                entry.prompt_begins(prompt_tokens)
            inner = super().generate(tokens, *args, **kwargs)
            sent: Any = None
            # The first step of the inner generator reads the prompt; later ones one token each.
            self._reading_prompt = True
            try:
                while True:
                    try:
                        token = inner.send(sent)
                    except StopIteration:
                        return
                    if self._reading_prompt and entry is not None:
                        entry.prompt_done(self.stats["prompt_tokens_evaluated"] - evaluated_before)
                    self._reading_prompt = False
                    if self._cancelled():
                        # Ends like a length cut; nobody is left to read the reply.
                        self.stats["cancelled"] += 1
                        return
                    if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                        completion_tokens += 1
                        self.stats["completion_tokens"] += 1
                        self.last_usage = (prompt_tokens, completion_tokens)
                        if entry is not None:
                            entry.token()
                    sent = yield token
            finally:
                self._reading_prompt = False
                inner.close()
                if entry is not None:
                    entry.generation_done()

        def save_state(self) -> Any:
            """A prompt-cache entry without the stock ``n_batch x n_vocab`` logits copy.

            The stock state copies 512 rows of logits (311 MB for Qwen's 152k vocabulary)
            that the RAM cache does not even count against its capacity: a transient
            311 MB allocation per request, and many GB held by a few dozen entries.  Only
            the last row is kept: after ``load_state`` the model re-evaluates at least the
            last prompt token before sampling (``_requires_eval``), and ``load_state``
            broadcasts the row it is given.
            """
            ctx = self._ctx.ctx
            size = llama_cpp.llama_state_get_size(ctx)
            buffer = (ctypes.c_uint8 * size)()
            written = int(llama_cpp.llama_state_get_data(ctx, buffer, size))
            if written > size:
                raise RuntimeError("llama_state_get_data overran its buffer")
            return llama_cpp.LlamaState(
                input_ids=self.input_ids.copy(),
                scores=self._scores[-1:].copy(),
                n_tokens=self.n_tokens,
                llama_state=ctypes.string_at(buffer, written),
                llama_state_size=written,
                seed=self._seed,
            )

    return MeteredLlama
