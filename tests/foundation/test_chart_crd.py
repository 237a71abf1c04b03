"""The chart ships the CRD as a copy (Helm installs files under crds/ first); it must not drift."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_chart_crd_is_identical_to_the_source() -> None:
    source = (ROOT / "crds" / "videotranscodes.yaml").read_bytes()
    assert (ROOT / "charts" / "vidup" / "crds" / "videotranscodes.yaml").read_bytes() == source
