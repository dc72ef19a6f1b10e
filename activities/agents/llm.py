"""The LLM research agent: hypotheses from any OpenAI-compatible chat endpoint.

The model is asked for moves in the action space and its reply is treated as hostile input:
the prompt and the strict reading of the reply are ``hypotheses.py``'s (``diagnosis.py``'s
for a failure no runbook entry matches); this module talks to the endpoint. Every exchange is
recorded (model, prompt version, raw reply) and replies are cached by prompt digest, so a
retried activity or a replayed plan does not ask again.

Structured output is negotiated, because servers differ: a forced tool call first, then
``response_format`` ``json_schema``, then ``json_object`` with a ``schema`` (llama.cpp's
extension). The first mode the endpoint accepts is remembered by the agent. Temporal owns
retries: the SDK's are off, and timeouts, connection errors and servers refusing every mode
raise so that the activity is retried under the workflow's policy.
"""

import asyncio
import hashlib
import json
import logging
from typing import Any, Literal, Protocol

import openai
from temporalio import activity

from activities.agents import diagnosis, hypotheses
from contracts.insights import LlmCall, ProposalInput, Proposals
from contracts.provenance import Provenance
from contracts.runbook import Diagnosis, FailureReport

AGENT = "llm"
MAX_COMPLETION_TOKENS = 2048
# Statuses by which servers say "not this way of asking" rather than "broken": try the next
# mode. llama-cpp-python's server answers json_schema with 500.
FALLBACK_STATUSES = frozenset({400, 404, 422, 500, 501})

Mode = Literal["tool", "json_schema", "json_object"]
MODES: tuple[Mode, ...] = ("tool", "json_schema", "json_object")

log = logging.getLogger("openrea.llm")


class ReplyStore(Protocol):
    """Where exchanges are recorded and replies cached (the insights database)."""

    def cached_reply(self, prompt_digest: str) -> str | None:
        """The endpoint's latest reply to this prompt digest, if any."""
        ...

    def record_call(self, call: LlmCall) -> None:
        """Keep one exchange, whatever came of it."""
        ...


def prompt_digest(model: str, messages: list[dict[str, str]], mode: Mode) -> str:
    """SHA-256 of the canonical request: the cache key of its reply."""
    canonical = json.dumps(
        {
            "model": model,
            "prompt_version": hypotheses.PROMPT_VERSION,
            "messages": messages,
            "mode": mode,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def sha256(text: str) -> str:
    """Hex SHA-256 of ``text``: a reply's digest in its record and provenance."""
    return hashlib.sha256(text.encode()).hexdigest()


class LlmAgent:
    """Hypotheses from a chat endpoint (OpenAI, vLLM, llama.cpp, Ollama...).

    Args:
        base_url: The endpoint, e.g. ``http://127.0.0.1:8080/v1``.
        model: The model name sent with each request.
        api_key: The endpoint's key; empty for servers that need none.
        timeout_s: Limit of one request; past it the call raises (Temporal retries).
        store: Where exchanges are recorded and replies cached.
        modes: The structured-output modes to try, in order (all of ``MODES`` by default;
            fewer for an endpoint known to mishandle one).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        timeout_s: float,
        store: ReplyStore,
        modes: tuple[Mode, ...] = MODES,
    ) -> None:
        if not modes or any(m not in MODES for m in modes):
            raise ValueError(f"modes: {modes!r}; expected a non-empty subset of {MODES}")
        self._model = model
        self._store = store
        self._modes = modes
        # Temporal owns retries: the SDK's own would multiply the activity's timeout.
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=timeout_s
        )
        self._mode: Mode | None = None

    @property
    def mode(self) -> Mode | None:
        """The structured-output mode the endpoint accepted; None before the first reply."""
        return self._mode

    async def propose(self, inp: ProposalInput) -> Proposals:
        """Hypotheses for ``inp``'s campaign, valid moves only, each with provenance.

        Raises:
            openai.APITimeoutError: the endpoint did not answer in time.
            openai.APIConnectionError: it could not be reached.
            openai.APIStatusError: it refused every mode, or failed in a way no other mode
                would fix (e.g. 401, 429, 503).
        """
        messages = hypotheses.build_messages(inp)
        schema = hypotheses.reply_schema(inp.max_hypotheses)
        modes = (self._mode,) if self._mode else self._modes
        digests = {mode: prompt_digest(self._model, messages, mode) for mode in modes}
        for mode in modes:
            cached = await asyncio.to_thread(self._store.cached_reply, digests[mode])
            if cached is not None:
                self._mode = mode
                return await self._conclude(inp, mode, digests[mode], cached, None, cached=True)
        mode, raw, usage = await self._negotiate(messages, schema, hypotheses.TOOL_NAME)
        return await self._conclude(inp, mode, digests[mode], raw, usage, cached=False)

    async def diagnose(self, report: FailureReport) -> Diagnosis:
        """A first-principles diagnosis and one typed remedy for a failure no runbook entry
        matches (the caller checks the remedy applies). Every exchange is recorded.

        Raises:
            openai.APIError: as ``propose``.
        """
        messages = diagnosis.build_messages(report)
        mode, raw, usage = await self._negotiate(messages, diagnosis.SCHEMA, diagnosis.TOOL_NAME)
        found, refused = diagnosis.parse_reply(raw)
        call = LlmCall(
            prompt_digest=prompt_digest(self._model, messages, mode),
            campaign_id=report.spec.campaign_id,
            model=self._model,
            prompt_version=diagnosis.PROMPT_VERSION,
            mode=mode,
            raw_reply=raw,
            reply_digest=sha256(raw),
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            accepted=[found.remedy.kind] if found.remedy else [],
            rejected=refused,
        )
        await asyncio.to_thread(self._store.record_call, call)
        return found

    async def _negotiate(
        self, messages: list[dict[str, str]], schema: dict[str, Any], tool: str
    ) -> tuple[Mode, str, Any]:
        """Ask in the first structured-output mode the endpoint accepts (the one it accepted
        before, once known): the mode, the reply's text and its usage."""
        modes = (self._mode,) if self._mode else self._modes
        error: openai.APIStatusError | None = None
        for mode in modes:
            try:
                raw, usage = await self._ask(messages, schema, mode, tool)
            except openai.APIStatusError as err:
                if err.status_code not in FALLBACK_STATUSES:
                    raise
                log.info("endpoint refused mode %s (HTTP %s)", mode, err.status_code)
                error = err
                continue
            if raw is None:
                log.info("endpoint ignored the forced tool call; trying the next mode")
                continue
            self._mode = mode
            return mode, raw, usage
        if error is None:
            raise RuntimeError("the endpoint answered no mode with a usable reply")
        raise error

    async def _ask(
        self, messages: list[dict[str, str]], schema: dict[str, Any], mode: Mode, tool: str
    ) -> tuple[str | None, Any]:
        """The reply's text in ``mode`` (None: no tool call came back) and its usage."""
        kwargs: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "temperature": 0.2,
            "max_tokens": MAX_COMPLETION_TOKENS,
        }
        if mode == "tool":
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool,
                        "description": "Submit the answer.",
                        "parameters": schema,
                    },
                }
            ]
            kwargs["tool_choice"] = {"type": "function", "function": {"name": tool}}
        elif mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": tool, "schema": schema, "strict": True},
            }
        else:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        completion = await self._client.chat.completions.create(**kwargs)
        if not completion.choices:
            return ("" if mode != "tool" else None), completion.usage
        message = completion.choices[0].message
        if mode == "tool":
            calls = [
                c
                for c in message.tool_calls or []
                if getattr(c, "function", None) is not None and c.function.name == tool
            ]
            return (calls[0].function.arguments if calls else None), completion.usage
        return message.content or "", completion.usage

    async def _conclude(
        self, inp: ProposalInput, mode: Mode, digest: str, raw: str, usage: Any, cached: bool
    ) -> Proposals:
        """Parse ``raw``, record the exchange and log what was refused."""
        provenance = Provenance(
            source="llm",
            agent=AGENT,
            model=self._model,
            prompt_version=hypotheses.PROMPT_VERSION,
            reply_digest=sha256(raw),
        )
        accepted, rejected = hypotheses.parse_reply(raw, inp, provenance)
        for reason in rejected:
            log.warning("LLM proposal refused (campaign %s): %s", inp.campaign_id, reason)
        call = LlmCall(
            prompt_digest=digest,
            campaign_id=inp.campaign_id,
            model=self._model,
            prompt_version=hypotheses.PROMPT_VERSION,
            mode=mode,
            raw_reply=raw,
            reply_digest=provenance.reply_digest,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            accepted=[h.id for h in accepted],
            rejected=rejected,
            cached=cached,
        )
        await asyncio.to_thread(self._store.record_call, call)
        origin = "cached reply" if cached else f"reply via {mode}"
        return Proposals(
            source="llm",
            hypotheses=accepted,
            rejected=rejected,
            note=f"{self._model} ({origin}): {len(accepted)} accepted, {len(rejected)} refused",
            task=inp.task,
        )


class LlmActivities:
    """The LLM research agent as an activity.

    Args:
        agent: The agent; None when no endpoint is configured.
    """

    def __init__(self, agent: LlmAgent | None) -> None:
        self._agent = agent

    @activity.defn(name="propose_hypotheses_llm")
    async def propose_hypotheses_llm(self, inp: ProposalInput) -> Proposals:
        """The language model's hypotheses, or a note saying none is configured.

        Raises:
            openai.APIError: timeouts, connection errors and refused requests propagate, so
                Temporal retries under the workflow's policy.
        """
        if self._agent is None:
            return Proposals(
                source="llm",
                note="no LLM endpoint configured (set REA_LLM_BASE_URL and REA_LLM_MODEL); "
                "only the knowledge-based agent proposed",
            )
        return await self._agent.propose(inp)
