"""The settings reference, generated from the Settings model (README's table comes from here)."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from mxgate.settings import Settings


def reference(model: type[BaseModel] = Settings, prefix: str = "MXGATE_") -> Iterator[tuple]:
    """(environment variable, default, description) for every setting."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from reference(ann, f"{prefix}{name.upper()}__")
            continue
        default = "(host name)" if field.default_factory is not None else field.default
        if isinstance(default, tuple):
            default = list(default)
        yield f"{prefix}{name.upper()}", default, field.description or ""


def markdown() -> str:
    """The reference as a Markdown table."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{k}` | `{d}` | {desc} |" for k, d, desc in reference()]
    return "\n".join(rows)
