"""Role prefixes and suffixes read off a model's Jinja chat template.

The DSL builds prompts as text, one role block at a time, so it needs each role's wrapping
strings rather than a whole-conversation renderer. They are found by rendering small
conversations with sentinel contents and cutting around the sentinels:

    render([system S, user U])             = A
    render([system S, user U, assistant X]) = A + assistant_prefix + X + assistant_suffix

A template that injects a default system message when the first message is not a system one
(SmolLM2 does) shows it as extra text before the user prefix when rendering [user X]; the DSL
emits that text when a program's first role block is not a system block, as the template would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_SENTINEL = "\ue000RSX\ue000"  # private-use characters: never produced by a real template
_S0, _U0 = "\ue000RS0\ue000", "\ue000RU0\ue000"

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
    pass


@dataclass(slots=True, frozen=True)
class ChatTemplate:
    prefixes: dict[str, str]
    suffixes: dict[str, str]
    default_system: str = ""  # emitted before the first role block when it is not a system one
    source: str = ""  # where the template came from, for error messages

    def begin(self, role: str) -> str:
        return self._lookup(self.prefixes, role)

    def end(self, role: str) -> str:
        return self._lookup(self.suffixes, role)

    def _lookup(self, table: dict[str, str], role: str) -> str:
        if role not in table:
            raise ChatTemplateError(f"the chat template ({self.source}) has no role {role!r}")
        return table[role]

    @classmethod
    def from_jinja(
        cls,
        template: str,
        special_tokens: dict[str, str] | None = None,
        source: str = "jinja",
    ) -> ChatTemplate:
        """Derives role wrappings from a Hugging Face style Jinja chat template string."""
        render = _compile(template, special_tokens or {})
        prefixes: dict[str, str] = {}
        suffixes: dict[str, str] = {}
        for role, before in (
            ("user", [("system", _S0), ("user", _U0), ("assistant", _S0)]),
            ("assistant", [("system", _S0), ("user", _U0)]),
        ):
            head = render(before)
            full = render([*before, (role, _SENTINEL)])
            if not full.startswith(head) or _SENTINEL not in full:
                raise ChatTemplateError(f"cannot isolate the {role!r} role in {source}")
            prefixes[role], suffixes[role] = full[len(head) :].split(_SENTINEL, 1)
        system_full = render([("system", _SENTINEL)])
        head, tail = system_full.split(_SENTINEL, 1)
        # A leading BOS-like text belongs to the conversation, not the role: keep it with the
        # system prefix, which is always the first block when present.
        prefixes["system"], suffixes["system"] = head, tail
        user_first = render([("user", _SENTINEL)])
        default_system = user_first.split(_SENTINEL, 1)[0]
        default_system = default_system.removesuffix(prefixes["user"])
        return cls(prefixes, suffixes, default_system, source)


def _compile(template: str, special_tokens: dict[str, str]) -> Any:
    try:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:  # jinja2 comes with transformers; say so if it is missing
        raise ChatTemplateError("jinja2 is needed to read a chat template") from exc

    def raise_exception(message: str) -> None:
        raise ChatTemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = raise_exception
    try:
        compiled = env.from_string(template)
    except TemplateError as exc:
        raise ChatTemplateError(f"the chat template does not parse: {exc}") from exc

    def render(messages: list[tuple[str, str]], add_generation_prompt: bool = False) -> str:
        try:
            return compiled.render(
                messages=[{"role": r, "content": c} for r, c in messages],
                add_generation_prompt=add_generation_prompt,
                **special_tokens,
            )
        except TemplateError as exc:
            raise ChatTemplateError(f"the chat template failed to render: {exc}") from exc

    return render


CHATML = ChatTemplate.from_jinja(CHATML_TEMPLATE, source="ChatML (default)")
