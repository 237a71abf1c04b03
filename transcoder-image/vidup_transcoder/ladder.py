"""Which renditions a source gets: the rungs it can fill, never upscaled, every dimension even.

A rung's height refers to the picture's *short side*, so a portrait phone video asked for "720p"
becomes 720x1280 rather than a 405x720 letterbox of itself. Bitrates follow the shape of Apple's
HLS authoring ladder with a constrained-VBR cap (maxrate ~1.07x, bufsize 1.5x the target).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rung:
    """A ladder step: short-side height and its rate control (kbit/s)."""

    height: int
    video_kbps: int
    maxrate_kbps: int
    bufsize_kbps: int


def _rung(height: int, video_kbps: int) -> Rung:
    return Rung(height, video_kbps, round(video_kbps * 1.07), round(video_kbps * 1.5))


#: Known rungs; requests may name any of these heights.
RUNGS: dict[int, Rung] = {
    r.height: r
    for r in (
        _rung(2160, 16800), _rung(1440, 9000), _rung(1080, 5000), _rung(720, 2800),
        _rung(540, 2000), _rung(480, 1400), _rung(360, 800), _rung(240, 400), _rung(144, 200),
    )
}

DEFAULT_HEIGHTS: tuple[int, ...] = (1080, 720, 480)

AUDIO_KBPS = 128


def rung_for(height: int) -> Rung:
    """A known rung, or one interpolated by pixel count between its neighbours for an unusual height
    (e.g. a 362-pixel-tall source), so small pictures keep the ladder's higher bits per pixel."""
    if height in RUNGS:
        return RUNGS[height]
    known = sorted(RUNGS)
    if height < known[0]:
        base = RUNGS[known[0]]
        return _rung(height, max(50, round(base.video_kbps * (height / base.height) ** 2)))
    if height > known[-1]:
        base = RUNGS[known[-1]]
        return _rung(height, round(base.video_kbps * (height / base.height) ** 2))
    low = max(k for k in known if k < height)
    high = min(k for k in known if k > height)
    t = (height**2 - low**2) / (high**2 - low**2)
    kbps = RUNGS[low].video_kbps + t * (RUNGS[high].video_kbps - RUNGS[low].video_kbps)
    return _rung(height, round(kbps))


@dataclass(frozen=True)
class Rendition:
    """One output variant: its directory name, exact even output size and rate control."""

    name: str
    width: int
    height: int
    rung: Rung


def even_floor(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def even_round(value: float) -> int:
    return max(2, round(value / 2.0) * 2)


def scaled_size(display_w: int, display_h: int, short_side: int) -> tuple[int, int]:
    """Output size whose short side is ``short_side``; the long side keeps the aspect ratio, rounded
    to the nearest even number but never past the source (no 1-pixel upscales)."""
    landscape = display_w >= display_h
    long_src, short_src = (display_w, display_h) if landscape else (display_h, display_w)
    long_out = min(even_round(long_src * short_side / short_src), even_floor(long_src))
    short_out = short_side
    return (long_out, short_out) if landscape else (short_out, long_out)


def choose_ladder(
    display_w: int, display_h: int, heights: list[int] | tuple[int, ...] = DEFAULT_HEIGHTS
) -> list[Rendition]:
    """Renditions for a source as displayed, tallest first.

    Rungs taller than the source's short side are skipped; a source smaller than every rung still
    gets one rendition at its own (even) size so that nothing uploaded is rejected for being small.
    """
    if display_w <= 0 or display_h <= 0:
        raise ValueError("source dimensions must be positive")
    short = min(display_w, display_h)
    wanted = sorted({int(h) for h in heights if int(h) > 0} or set(DEFAULT_HEIGHTS), reverse=True)
    out: list[Rendition] = []
    for height in wanted:
        if height > short:
            continue
        h_even = even_floor(height)
        w, h = scaled_size(display_w, display_h, h_even)
        out.append(Rendition(f"{height}p", w, h, rung_for(height)))
    if not out:
        w, h = even_floor(display_w), even_floor(display_h)
        own = min(w, h)
        out.append(Rendition(f"{own}p", w, h, rung_for(own)))
    return out
