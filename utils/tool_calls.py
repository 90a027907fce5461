"""Function calling for a model whose chat template knows no tools: a prompt, a grammar, a parser.

SmolLM2's chat template has no tools section, so the server uses its own protocol (the Hermes/Qwen style):
the system prompt lists the tools (`tools_prompt`), and a call is written as

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Several calls (parallel tool calls) are several blocks, each right after the previous one: no newline
between them, because after "</tool_call>" SmolLM2 writes "\n" to go on in prose (p = 0.92, against 0.06 for
end-of-sequence); a newline separator would turn that into a forced second call. Decoding is constrained
(`tool_constraint`) so that every block is exactly this shape, `name` is one of the tools and `arguments`
matches that tool's `parameters` schema, then `parse_tool_calls` turns the text into OpenAI-shaped calls.

tool_choice (OpenAI's meanings):
- "none": no constraint (the server may still describe the tools);
- "required": one or more calls, to any tools (one only if parallel calls are off);
- {"type": "function", "function": {"name": X}}: exactly one call, to X;
- "auto": free text, OR tool calls if (and only if) the output starts with `<tool_call>`: while the
  output is still a prefix of `<tool_call>` anything goes; once it starts with it, the grammar decides.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from utils.constrained import JsonConstraint, TokenVocabulary
from utils.json_grammar import Grammar, compile_schema
from utils.json_nodes import Literal, Object, Slot

OPEN, CLOSE, SEPARATOR = "<tool_call>\n", "\n</tool_call>", ""
TRIGGER = "<tool_call>"  # in "auto" mode, an output that starts with this must be tool calls
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}  # arguments: {}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
# In our JSON a raw newline is whitespace, followed by spaces or JSON, never by "<": so the first
# "\n</tool_call>" after an opening tag closes that block.
_BLOCK = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class Tool:
    """One function the model may call, checked, with the grammar of its arguments."""
    name: str
    description: str
    parameters: dict
    grammar: Grammar


@dataclass(eq=False)
class Tagged:
    """A node (see utils.json_nodes): open VALUE close (again VALUE close)*, at most max_count values.

    pos: (phase, values so far); phases: open -> value -> close -> end (may stop, or `again` -> value).
    """
    open: Literal
    value: Slot
    close: Literal
    again: Literal  # separator + open
    max_count: int | None = None
    start = ("open", 0)

    def step(self, pos, ch):
        return []  # everything is read by the children

    def children(self, pos):
        phase, n = pos
        if phase == "value":
            return [(alt, ("close", n)) for alt in self.value.alts]
        if phase == "end" and n == self.max_count:
            return ()
        return [({"open": self.open, "close": self.close, "end": self.again}[phase],
                 ("end", n + 1) if phase == "close" else ("value", n))]

    def can_end(self, pos):
        return pos[0] == "end"

    def next_chars(self, pos):
        return set()


def validate_tools(tools: list) -> list[Tool]:
    """Check OpenAI `tools` ([{"type": "function", "function": {...}}]); ValueError says what is wrong."""
    if not isinstance(tools, list) or not tools:
        raise ValueError(f"tools must be a non-empty list of {{'type': 'function', 'function': {{...}}}}, "
                         f"got {tools!r}")
    out: list[Tool] = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function" or set(tool) - {"type", "function"}:
            raise ValueError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                             f"'description': ..., 'parameters': ...}}}}, got {tool!r}")
        if extra := set(fn) - {"name", "description", "parameters", "strict"}:
            raise ValueError(f"tools[{i}].function: unknown keys {sorted(extra)}; allowed: name, "
                             "description, parameters, strict")
        name, description = fn.get("name"), fn.get("description", "")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in {t.name for t in out}:
            raise ValueError(f"tools[{i}].function.name must be a new name of 1-64 letters, digits, _ or -, "
                             f"got {name!r}")
        if not isinstance(description, str):
            raise ValueError(f"tools[{i}].function.description must be a string, got {description!r}")
        parameters = fn.get("parameters", NO_PARAMETERS)
        try:
            grammar = compile_schema(parameters)
        except ValueError as e:
            raise ValueError(f"tools[{i}] ({name}) parameters: {e}") from None
        if not all(isinstance(node, Object) for node in grammar.roots):
            raise ValueError(f"tools[{i}] ({name}) parameters must describe an object, got {parameters!r}")
        out.append(Tool(name, description, parameters, grammar))
    return out


def tools_prompt(tools: list) -> str:
    """The system-prompt text that shows the model its tools and how to call them."""
    specs = "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters},
                                 ensure_ascii=False) for t in validate_tools(tools))
    return ("You can call functions to answer the user. The functions, one JSON object per line:\n"
            f"<tools>\n{specs}\n</tools>\n"
            "To call a function, answer with its name and arguments as a JSON object inside <tool_call> "
            "tags:\n"
            f'{OPEN}{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}{CLOSE}\n'
            "To call several functions, write one such block per call, each right after the previous one. "
            "If no function is needed, answer the user directly.")


def tool_call_grammar(tools: list, name: str | None = None, parallel: bool = True) -> Grammar:
    """Grammar of one or more <tool_call> blocks (exactly one if `name` is given or parallel is False)."""
    checked = [t for t in validate_tools(tools) if name is None or t.name == name]
    if not checked:
        raise ValueError(f"tool_choice names {name!r}, which is not among the tools "
                         f"{[t.name for t in validate_tools(tools)]}")
    calls = tuple(Object(props=((Literal(('"name"',)), Slot((Literal((json.dumps(t.name),)),)), True),
                                (Literal(('"arguments"',)), Slot(t.grammar.roots), True)))
                  for t in checked)  # {"name": <that tool>, "arguments": <its parameters>}, per tool
    most = 1 if name is not None or not parallel else None
    blocks = Tagged(Literal((OPEN,)), Slot(calls), Literal((CLOSE,)), Literal((SEPARATOR + OPEN,)), most)
    return Grammar((blocks,))


def tool_constraint(tools: list, tool_choice, vocab: TokenVocabulary, parallel: bool = True):
    """The constraint for OpenAI's `tool_choice`: None ("none"), JsonConstraint or AutoToolConstraint."""
    if tool_choice == "none":
        validate_tools(tools)
        return None
    if tool_choice in ("auto", "required"):
        grammar = tool_call_grammar(tools, parallel=parallel)
        return AutoToolConstraint(grammar, vocab) if tool_choice == "auto" else JsonConstraint(grammar, vocab)
    fn = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    if not isinstance(fn, dict) or tool_choice.get("type") != "function":
        raise ValueError(f'tool_choice must be "none", "auto", "required" or {{"type": "function", '
                         f'"function": {{"name": ...}}}}, got {tool_choice!r}')
    return JsonConstraint(tool_call_grammar(tools, name=fn.get("name")), vocab)


class AutoToolConstraint:
    """tool_choice="auto": free text, unless the output starts with <tool_call>; then only tool calls.

    mode: "undecided" while the output is a prefix of TRIGGER, then "free" or "tools" for good.
    """

    def __init__(self, grammar: Grammar, vocab: TokenVocabulary):
        self.vocab, self.tools = vocab, JsonConstraint(grammar, vocab)
        self.mode, self.text, self.finished = "undecided", "", False

    def _outcome(self, token_id: int):
        """(mode, state) after token_id, or None if not allowed."""
        text = self.vocab.texts[token_id] if 0 <= token_id < len(self.vocab.texts) else None
        if self.mode == "tools":
            state = self.tools.state.feed(text) if text else None
            return ("tools", state) if state is not None else None
        if self.mode == "free" or text is None:
            return ("free", None)
        new = self.text + text
        if new.startswith(TRIGGER):
            state = self.tools.grammar.start().feed(new)
            return ("tools", state) if state is not None else None
        return ("undecided", None) if TRIGGER.startswith(new) else ("free", None)

    def allows(self, token_id: int) -> bool:
        """Whether token_id may come next."""
        if token_id in self.vocab.eos_ids:
            return self.eos_allowed
        return not self.finished and self._outcome(token_id) is not None

    def advance(self, token_id: int) -> None:
        """Record the generated token; ValueError if it was not allowed."""
        if not self.allows(token_id):
            raise ValueError(f"token {token_id} ({self.vocab.texts[token_id]!r}) is not allowed here")
        if token_id in self.vocab.eos_ids:
            self.finished = True
            return
        self.mode, state = self._outcome(token_id)
        if self.mode == "undecided":
            self.text += self.vocab.texts[token_id]
        elif self.mode == "tools":
            self.tools.state = state

    @property
    def eos_allowed(self) -> bool:
        """Free text may stop anywhere; tool calls only when complete."""
        return not self.finished and (self.mode != "tools" or self.tools.state.complete)

    @property
    def done(self) -> bool:
        """EOS was generated, or the tool calls are complete and nothing may follow."""
        return self.finished or (self.mode == "tools" and self.tools.state.done)

    def allowed_ids(self) -> list[int]:
        """Every allowed id (slow outside "tools" mode, but sample_token rarely needs it there)."""
        if self.mode == "tools":
            return self.tools.allowed_ids()
        return [i for i in range(len(self.vocab.texts)) if self.allows(i)]


def parse_tool_calls(text: str) -> list[dict] | None:
    """[{"name", "arguments" (a JSON string, as OpenAI returns it)}], or None if `text` is not tool calls.

    Tool calls are one or more <tool_call> blocks and nothing else; the text must start with <tool_call>.
    """
    if not text.startswith(TRIGGER) or _BLOCK.sub("", text).strip():
        return None
    calls = []
    for block in _BLOCK.findall(text):
        try:
            call = json.loads(block)
        except json.JSONDecodeError:
            return None
        if not (isinstance(call, dict) and set(call) == {"name", "arguments"}
                and isinstance(call["name"], str) and isinstance(call["arguments"], dict)):
            return None
        calls.append({"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)})
    return calls


def render_tool_messages(messages: list[dict]) -> list[dict[str, str]]:
    """OpenAI messages as plain {"role", "content"} turns for a chat template that knows no tools.

    An assistant turn's `tool_calls` become its <tool_call> blocks (what the model would have written);
    tool results (role "tool") go back as one user turn of <tool_response> blocks, in order (Qwen's style).
    """
    out: list[dict[str, str]] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            blocks = []
            for call in message["tool_calls"]:
                fn = call.get("function") or {}
                try:
                    arguments = json.loads(fn.get("arguments") or "{}")
                except json.JSONDecodeError as error:
                    raise ValueError(f"tool call {call.get('id')!r}: arguments are not JSON ({error})") from None
                call_json = json.dumps({"name": fn.get("name"), "arguments": arguments}, ensure_ascii=False)
                blocks.append(f"{OPEN}{call_json}{CLOSE}")
            out.append({"role": "assistant", "content": (content + "\n" if content else "") + "".join(blocks)})
        elif role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1]["content"].endswith("</tool_response>"):
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n" + block}
            else:
                out.append({"role": "user", "content": block})
        else:
            out.append({"role": role, "content": content})
    return out
