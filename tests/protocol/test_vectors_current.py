"""The golden vectors and the worked examples in docs/protocol.md are what the
current encoder writes (regenerate with `python -m tools.gen_vectors`)."""

from __future__ import annotations

from pathlib import Path

from tools import gen_vectors


def test_vector_files_and_doc_examples_are_current() -> None:
    rendered = gen_vectors.render()
    assert "../../docs/protocol.md" in rendered, "docs/protocol.md lost its generated-examples markers"
    for name, text in rendered.items():
        path = (gen_vectors.VECTOR_DIR / name).resolve()
        assert path.read_text() == text, f"{path} is stale: run python -m tools.gen_vectors"


def test_doc_examples_annotate_every_byte() -> None:
    frames = gen_vectors.build_frames()
    for case in frames:
        frame = bytes.fromhex(case["hex"])
        rows = gen_vectors.annotate(frame)
        covered = sum(len(bytes.fromhex(hx.replace(" ", ""))) for _, hx, _, _ in rows)
        assert covered == len(frame), case["name"]


def test_doc_mentions_every_reason_and_kind() -> None:
    from shared_protocol.errors import REASONS
    from shared_protocol.topics import KINDS

    text = (Path(gen_vectors.ROOT) / "docs" / "protocol.md").read_text()
    for reason in REASONS:
        assert f"`{reason}`" in text, reason
    for kind in KINDS:
        assert f"| {kind} |" in text, kind
