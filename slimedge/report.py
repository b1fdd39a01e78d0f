"""The demo's report folder: a Markdown page plus figures, rebuilt from the work folder's
artifacts. Each pipeline stage contributes a section once its artifact exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimedge.artifacts import atomic_dir
from slimedge.pipeline import WorkFolder

REPORT_VERSION = 1


def _dataset_section(work: WorkFolder, out: Path) -> list[str]:
    from slimedge.data.contact_sheet import write_contact_sheet
    from slimedge.data.container import load_dataset

    ds = load_dataset(work.path("dataset"))
    write_contact_sheet(ds, out / "contact_sheet.png", n_objects=min(12, len(ds.class_names)))
    counts = ds.split_counts()
    h, w = ds.image_size
    return [
        "## Dataset",
        "",
        f"- {ds.n_objects} objects, {ds.n_views} views each, {h}x{w} grayscale, "
        f"{len(ds.class_names)} classes",
        "- splits: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
        f"- content hash `{ds.content_hash()[:16]}`",
        "",
        "![contact sheet: objects x views](contact_sheet.png)",
        "",
    ]


def write_report(work: WorkFolder, out: Path) -> dict[str, Any]:
    """Rebuild `out` (atomically) from what the work folder holds; returns the record."""
    with atomic_dir(out) as tmp:
        lines = ["# SlimEdge demo report", ""]
        sections = []
        if work.path("dataset").exists():
            lines += _dataset_section(work, tmp)
            sections.append("dataset")
        (tmp / "index.md").write_text("\n".join(lines) + "\n")
    return {"sections": sections}
