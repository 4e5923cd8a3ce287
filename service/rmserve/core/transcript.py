"""HH-RLHF transcripts: `"\n\nHuman: ...\n\nAssistant: ..."`, the layout rmserve's own models read.

The `transcript` input format (`rmserve.core.formats`) lays out every exchange through this
class, in training and in serving alike, so a model reads served text in exactly the layout it
was trained on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rmserve.core.conversation import Turn
from rmserve.errors import InvalidField

DEFAULT_ROLES = {"system": "System", "user": "Human", "assistant": "Assistant"}


@dataclass(frozen=True)
class Transcript:
    """A transcript layout: each turn is `"\\n\\n{Role}: {content}"` (HH-RLHF's own layout).

    The prompt a response answers always ends with the assistant marker (`"\\n\\nAssistant:"`);
    the response is the assistant's text after it.
    """

    roles: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ROLES))

    @classmethod
    def from_manifest(cls, spec: Mapping[str, object]) -> Transcript:
        roles = spec.get("roles", {})
        if not isinstance(roles, Mapping):
            raise ValueError(f"input_format.roles must map roles to names, got {roles!r}")
        return cls(roles={**DEFAULT_ROLES, **{str(role): str(name) for role, name in roles.items()}})

    def to_manifest(self) -> dict[str, object]:
        return {"style": "transcript", "roles": dict(self.roles)}

    @property
    def assistant_marker(self) -> str:
        return self._turn_prefix("assistant").rstrip()

    def _turn_prefix(self, role: str) -> str:
        return f"\n\n{self.roles[role]}: "

    def render_prompt(self, turns: Sequence[Turn]) -> str:
        """Turns before a response, closed with the assistant marker the response follows."""
        return (
            self.render_turns([{"role": turn.role, "content": turn.content} for turn in turns]) + self.assistant_marker
        )

    def parse(self, text: str) -> list[Turn]:
        """A transcript's turns; text before the first marker (a bare system prompt) is a system turn."""
        names = {name: role for role, name in self.roles.items()}
        pattern = "|".join(re.escape(name) for name in names)
        pieces = re.split(rf"(?:^|\n\n)({pattern}):", text)
        preamble = [Turn("system", pieces[0].strip())] if pieces[0].strip() else []
        return (
            preamble
            + [  # the space after `Role:` is the layout's; the rest is the turn's own text
                Turn(names[name], content.removeprefix(" "))
                for name, content in zip(pieces[1::2], pieces[2::2], strict=True)
            ]
        )

    def render_turns(self, messages: Sequence[Mapping[str, str]], field_name: str = "messages") -> str:
        """Render chat messages as transcript turns."""
        parts = []
        for index, message in enumerate(messages):
            role = message.get("role", "")
            if role not in self.roles:
                raise InvalidField(
                    f"{field_name}[{index}].role",
                    f"role must be one of {sorted(self.roles)}, got {role!r}",
                )
            parts.append(self._turn_prefix(role) + message.get("content", "").strip())
        return "".join(parts)

    def prompt_text(self, prompt: str) -> str:
        """A prompt as the model reads it, ending with the assistant marker.

        A plain prompt ("How do I bake bread?") is one user turn; a prompt that is already a
        transcript (starts with a role marker) is kept and only gets the assistant marker added.
        """
        if not self._is_transcript(prompt):
            prompt = self._turn_prefix("user") + prompt.strip()
        prompt = prompt.rstrip()
        if not prompt.endswith(self.assistant_marker):
            prompt += self.assistant_marker
        return prompt

    def split_transcript(self, text: str, field_name: str = "text") -> tuple[str, str]:
        """Split a full transcript at its last assistant marker into (prompt, response), `prompt + response == text`:
        the space after the marker ends the prompt, the response is the rest as written."""
        cut = text.rfind(self.assistant_marker)
        if cut < 0:
            raise InvalidField(
                field_name,
                f"cannot find the response: no {self.assistant_marker.strip()!r} turn in the text",
            )
        cut += len(self.assistant_marker)
        cut += text.startswith(" ", cut)
        return text[:cut], text[cut:]

    def _is_transcript(self, text: str) -> bool:
        return any(text.startswith(self._turn_prefix(role).rstrip()) for role in self.roles)
