"""Recording OpenTelemetry spans in tests: an SDK tracer provider of one's own (the global one is
never set, so tests cannot leak a provider into each other) and an in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from burr_async.tracing import OpenTelemetryHook


@dataclass
class Recorder:
    """A tracer provider whose finished spans land in ``exporter``, and a hook sending there."""

    provider: TracerProvider
    exporter: InMemorySpanExporter

    @classmethod
    def new(cls) -> Recorder:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(provider, exporter)

    def hook(self) -> OpenTelemetryHook:
        return OpenTelemetryHook(tracer_provider=self.provider)

    @property
    def tracer(self) -> Tracer:
        """A tracer of the test's own, for the caller's spans (a request's, say)."""
        return self.provider.get_tracer("tests")

    def spans(self) -> list[ReadableSpan]:
        """The finished spans, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.outline()}"
        return found[0]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        """The spans whose parent is ``parent``, in the order they started."""
        assert parent.context is not None
        found = [
            s
            for s in self.spans()
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]
        return sorted(found, key=lambda s: s.start_time or 0)

    def outline(self) -> list[str]:
        """The span tree as indented names, for assertion messages."""
        spans = self.spans()
        ids = {s.context.span_id for s in spans if s.context is not None}
        roots = [s for s in spans if s.parent is None or s.parent.span_id not in ids]
        lines: list[str] = []

        def walk(span: ReadableSpan, depth: int) -> None:
            lines.append("  " * depth + span.name)
            for child in self.children(span):
                walk(child, depth + 1)

        for root in sorted(roots, key=lambda s: s.start_time or 0):
            walk(root, 0)
        return lines


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.context is not None and parent.context is not None
    return (
        child.parent is not None
        and child.parent.span_id == parent.context.span_id
        and child.context.trace_id == parent.context.trace_id
    )


def names(spans: Iterable[ReadableSpan]) -> list[str]:
    return [s.name for s in spans]
