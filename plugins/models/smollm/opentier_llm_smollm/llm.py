"""The ``smollm`` LLM: a GGUF chat model run by llama.cpp in a worker thread, streamed to the event loop.

Generation is CPU-bound and blocking, so it runs in a thread that hands each piece of text to the event
loop. A cancellation flag is checked at every token (llama.cpp's stopping criteria): closing the
stream stops generation within one token, and the stream waits for the thread before it returns, so
the model is free for the next call.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from opentier.components import LLM, LLMEvent, LLMRequest, TextDelta, Usage
from opentier.errors import LLMConfigError, LLMError, LLMRequestError
from opentier_llm_smollm.model_file import model_path
from opentier_llm_smollm.options import SmolLMOptions, default_threads


@dataclass(frozen=True, slots=True)
class _Finished:
    prompt_tokens: int
    answer: str


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


def llama_cpp() -> ModuleType:
    """The ``llama_cpp`` module, imported on first use: the plugin loads (and says what is missing)
    without it."""
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as err:
        raise LLMConfigError(
            f"the smollm model needs llama-cpp-python ({err}); see plugins/models/smollm/README.md"
        ) from None


class SmolLM(LLM):
    """SmolLM2-135M-Instruct, a small local model: fast on a CPU, fully offline, and prone to mistakes."""

    name = "smollm"
    description = "SmolLM2-135M-Instruct on llama.cpp: small, local, offline (it can make things up)."

    def __init__(self, options: SmolLMOptions | None = None) -> None:
        self._model: Any = None
        self._formatter: Any = None
        self._load_lock = threading.Lock()
        # One generation at a time: a llama.cpp context is not thread-safe.
        self._generate_lock = threading.Lock()
        self.configure(options or SmolLMOptions())

    def configure(self, options: SmolLMOptions) -> None:
        """Apply options (at start-up); a model loaded with other options is loaded again when used."""
        with self._load_lock:
            self.options = options
            self.context_window = options.context_window
            self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def generating(self) -> bool:
        """Whether a worker thread is generating right now."""
        return self._generate_lock.locked()

    def load(self) -> Any:
        """The ``llama_cpp.Llama`` model, loaded once (blocking: call it from a thread)."""
        with self._load_lock:
            if self._model is not None:
                return self._model
            module = llama_cpp()
            path = model_path(self.options.model_path)
            threads = self.options.threads or default_threads()
            try:
                model = module.Llama(
                    model_path=str(path),
                    n_ctx=self.options.context_window,
                    n_threads=threads,
                    n_threads_batch=threads,
                    seed=self.options.seed,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as err:
                raise LLMConfigError(f"llama.cpp cannot load {path}: {err}") from err
            template = model.metadata.get("tokenizer.chat_template")
            if not template:
                raise LLMConfigError(
                    f"{path} has no chat template (tokenizer.chat_template): not a chat model"
                )
            self._formatter = module.llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=_token_text(model, model.token_eos()),
                bos_token=_token_text(model, model.token_bos()),
                stop_token_ids=[model.token_eos()],
            )
            self._model = model
            return model

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` by the model's own tokenizer (loads the model on first use)."""
        tokens: list[int] = self.load().tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return len(tokens)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        if request.options:
            raise LLMRequestError(
                f"the smollm model takes no llm_options (given: {', '.join(sorted(request.options))})"
            )
        await asyncio.to_thread(self.load)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | _Finished | _Failed] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: str | _Finished | _Failed) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        worker = asyncio.ensure_future(asyncio.to_thread(self._generate, request, cancel, emit))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, str):
                    yield TextDelta(item)
                elif isinstance(item, _Finished):
                    output_tokens = self.count_tokens(item.answer) if item.answer else 0
                    yield Usage(input_tokens=item.prompt_tokens, output_tokens=output_tokens)
                    return
                else:
                    if isinstance(item.error, LLMError):
                        raise item.error
                    raise LLMError(
                        f"llama.cpp failed: {type(item.error).__name__}: {item.error}"
                    ) from item.error
        finally:
            # Closed early (a cancelled chat) or failed: stop at the next token and wait for the thread.
            cancel.set()
            await asyncio.shield(worker)

    def _generate(
        self, request: LLMRequest, cancel: threading.Event, emit: Callable[[str | _Finished | _Failed], None]
    ) -> None:
        """Runs in a worker thread: generate, handing each piece of text to ``emit``."""
        try:
            with self._generate_lock:
                if cancel.is_set():
                    return
                model = self.load()
                prompt, stop = self._prompt(request)
                room = self.options.context_window - len(prompt)
                if room < 1:
                    raise LLMRequestError(
                        f"the prompt has {len(prompt)} tokens, more than the smollm context window of "
                        f"{self.options.context_window} (plugin option context_window)"
                    )
                max_tokens = min(request.max_output_tokens, room, self.options.max_tokens or room)
                module = llama_cpp()
                criteria = module.StoppingCriteriaList([lambda _tokens, _logits: cancel.is_set()])
                answer: list[str] = []
                for part in model.create_completion(
                    prompt,
                    max_tokens=max_tokens,
                    temperature=request.temperature,
                    repeat_penalty=self.options.repeat_penalty,
                    stop=stop,
                    seed=self.options.seed,
                    stopping_criteria=criteria,
                    stream=True,
                ):
                    if cancel.is_set():
                        break
                    text: str = part["choices"][0]["text"]
                    if text:
                        answer.append(text)
                        emit(text)
                emit(_Finished(prompt_tokens=len(prompt), answer="".join(answer)))
        except BaseException as err:  # handed to the event loop, which raises it in the stream
            emit(_Failed(err))

    def _prompt(self, request: LLMRequest) -> tuple[list[int], list[str]]:
        """The prompt's tokens, rendered by the model's own chat template, and the stop sequences."""
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": message.role, "content": message.content} for message in request.messages]
        if not any(message["role"] == "user" for message in messages):
            raise LLMRequestError("the request to smollm has no user message")
        rendered = self._formatter(messages=messages)
        tokens: list[int] = self._model.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        stop: Sequence[str] = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop]
        return tokens, [*stop, *(sequence for sequence in request.stop if sequence)]


def _token_text(model: Any, token: int) -> str:
    if token < 0:
        return ""
    text: bytes = model.detokenize([token], special=True)
    return text.decode("utf-8", errors="replace")
