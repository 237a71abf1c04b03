"""The pieces of a chunked video: one chunk of the video, the audio, and the stitch.

:func:`vidup_transcoder.job.run_transcode` hands every request whose ``kind`` is not ``whole`` to
:func:`run_piece`. The plan (which chunk covers which seconds) is :func:`vidup.chunking.plan_chunks`
of the duration the ``whole`` job probed (``req.media_seconds``), so every piece cuts at the same
times whichever worker runs it. Each piece probes the source itself and picks the same ladder, so
every chunk has the same renditions, sizes and frame rate.

* ``chunk``: the video of one time range, every rung in one FFmpeg (no audio), segments numbered
  globally (:mod:`vidup_transcoder.chunk_command`), uploaded under ``<parts>/<chunk>/<rung>/``.
* ``audio``: the whole source's first audio stream, once, under ``<parts>/audio/``.
* ``stitch``: every piece's files into one package: the chunks' segment lists concatenated per rung,
  the audio as an audio rendition group, the master measured and written last, published like a
  single job's package. The parts stay: the operator deletes them once it has recorded the video
  Completed, so a Redis flush between the two cannot lose the record of the finished chunks (their
  markers) and have them encoded again; a stitch run twice publishes the same package twice.

While a piece runs, its claim (:class:`PieceClaim`) is kept fresh on storage. A chunk or the
audio leaves its done marker (:data:`vidup.chunking.DONE_MARKER`, a
:class:`vidup_transcoder.stitch.PieceMarker`) last, after every file it lists; a piece whose marker
exists returns at once, so re-enqueueing a finished piece costs nothing. Failures are classified as
in the single job: media FFmpeg cannot read is a returned ``failed`` result, anything else raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vidup import chunking
from vidup.storage import Blobs
from vidup.storage import layout as storage_layout
from vidup.transcode_jobs import (
    KIND_AUDIO,
    KIND_CHUNK,
    KIND_STITCH,
    TranscodeRequest,
    TranscodeResult,
)
from vidup_transcoder import (
    admission,
    chunk_command,
    command,
    encoding,
    ladder,
    master_playlist,
    package_store,
    probe,
    stitch,
)
from vidup_transcoder.errors import InvalidMediaError, TranscodeTimeoutError, TransientTranscodeError
from vidup_transcoder.limits import MediaLimits
from vidup_transcoder.output_guard import OutputGuard
from vidup_transcoder.probe import Probe
from vidup_transcoder.progress import ProgressParser
from vidup_transcoder.rlimits import ChildLimits
from vidup_transcoder.runner import run_streaming

log = logging.getLogger(__name__)

MARKER_CONTENT_TYPE = "application/json"


def marker_key(parts_path: str, piece: str) -> str:
    return f"{parts_path}/{piece}/{chunking.DONE_MARKER}"


def read_marker(blobs: Blobs, parts_path: str, piece: str) -> stitch.PieceMarker | None:
    """The piece's done marker, or None while the piece is not done."""
    raw = blobs.read_bytes(marker_key(parts_path, piece))
    return None if raw is None else stitch.PieceMarker.from_json(raw)


def run_piece(req: TranscodeRequest, blobs: Blobs, storage_dir: Path, job_id: str,
              publisher: encoding.ProgressPublisher, timeout_seconds: float | None, preset: str | None,
              clock: Callable[[], float], limits: MediaLimits, stats: dict[str, Any]) -> TranscodeResult:
    """Run one piece (``req.kind`` chunk, audio or stitch); see the module docstring."""
    if not req.parts_path:
        raise ValueError(f"a {req.kind} job needs parts_path")
    store = package_store.package_store_for(blobs, storage_dir)
    piece = _piece_name(req)
    # Where this attempt stages its files: the piece's directory for a chunk or the audio, the
    # package for the stitch; an earlier attempt's leftovers go first, as in the single job.
    staging_key = req.output_path if req.kind == KIND_STITCH else f"{req.parts_path}/{piece}"
    store.discard(staging_key, job_id)
    run = _Run(req, blobs, store, job_id, f"upload {req.video_id}", publisher, timeout_seconds, preset, clock,
               limits, stats, staging_key)
    try:
        with PieceClaim(blobs, f"{req.parts_path}/{piece}/{chunking.CLAIM}", job_id):
            result = run.stitch() if req.kind == KIND_STITCH else run.encode_piece(piece)
    except InvalidMediaError as exc:
        return encoding.failed_result(req, str(exc))
    finally:
        store.discard(staging_key, job_id)
    return result


class PieceClaim:
    """The piece's claim on storage (:data:`vidup.chunking.CLAIM`), written at once and rewritten
    every :data:`vidup.chunking.CLAIM_REFRESH_SECONDS` while the piece runs, removed when it ends.

    It tells the operator that a worker still runs a piece Redis has forgotten (a flush), so the
    piece is not enqueued a second time. Best effort: a store blip must not fail an encode, and a
    claim that could not be refreshed only goes stale (the operator then enqueues the piece again,
    which the done marker makes harmless)."""

    def __init__(self, blobs: Blobs, key: str, owner: str,
                 interval: float = chunking.CLAIM_REFRESH_SECONDS) -> None:
        self.blobs, self.key, self.owner, self.interval = blobs, key, owner, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        try:
            self.blobs.put_bytes(self.key, chunking.claim_body(time.time(), self.owner), MARKER_CONTENT_TYPE)
        except Exception as exc:  # see the class docstring
            log.warning("could not write the claim %s: %s", self.key, exc)

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()

    def __enter__(self) -> PieceClaim:
        self._write()
        self._thread = threading.Thread(target=self._refresh, name="vidup-claim", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.blobs.delete(self.key)
        except Exception as exc:  # see the class docstring
            log.warning("could not remove the claim %s: %s", self.key, exc)


def _piece_name(req: TranscodeRequest) -> str:
    if req.kind == KIND_CHUNK:
        return chunking.chunk_name(req.chunk)
    if req.kind == KIND_AUDIO:
        return chunking.AUDIO
    if req.kind == KIND_STITCH:
        return chunking.STITCH
    raise ValueError(f"unknown piece kind {req.kind!r}")


def _bring(blobs: Blobs, key: str, target: Path) -> None:
    """A stored file into the local package: a hard link on the volume, else a download."""
    local = blobs.local_path(key)
    if local is not None:
        with contextlib.suppress(OSError):
            os.link(local, target)
            return
        shutil.copyfile(local, target)
        return
    blobs.download_file(key, target)


def _upload_all(blobs: Blobs, files: dict[str, Path]) -> None:
    with ThreadPoolExecutor(package_store.PUBLISH_THREADS, thread_name_prefix="vidup-piece") as pool:
        list(pool.map(lambda item: blobs.upload_file(item[0], item[1], package_store.content_type_for(item[1].name)),
                      files.items()))


class _Run:
    """One attempt of one piece: the request, where things are, and the job's budgets."""

    def __init__(self, req: TranscodeRequest, blobs: Blobs, store: package_store.PackageStore, job_id: str,
                 label: str, publisher: encoding.ProgressPublisher, timeout_seconds: float | None, preset: str | None,
                 clock: Callable[[], float], limits: MediaLimits, stats: dict[str, Any], staging_key: str) -> None:
        self.req, self.blobs, self.store, self.job_id, self.label = req, blobs, store, job_id, label
        self.publisher, self.timeout_seconds, self.preset, self.clock = publisher, timeout_seconds, preset, clock
        self.limits, self.stats, self.staging_key = limits, stats, staging_key

    def _probe(self) -> tuple[Path, Probe, list[ladder.Rendition]]:
        source = self.store.fetch_source(self.req.source_path, self.job_id, self.label)
        facts = probe.probe(source, self.label, self.limits.ffmpeg_memory_bytes)
        admission.check_source(facts, self.limits, self.label)
        renditions = ladder.choose_ladder(facts.display_width, facts.display_height, self.req.renditions)
        return source, facts, renditions

    def _plan(self) -> list[chunking.Chunk]:
        if self.req.media_seconds <= 0:
            raise ValueError(f"a {self.req.kind} job needs media_seconds")
        return chunking.plan_chunks(self.req.media_seconds, self.req.segment_seconds, self.req.chunk_seconds)

    def _done(self, piece: str, marker: stitch.PieceMarker) -> TranscodeResult:
        return TranscodeResult(status="completed", video_id=self.req.video_id,
                               output_path=f"{self.req.parts_path}/{piece}",
                               duration_seconds=round(marker.duration_seconds, 3))

    # -- a chunk or the audio -----------------------------------------------------------------------

    def encode_piece(self, piece: str) -> TranscodeResult:
        req = self.req
        marker = read_marker(self.blobs, req.parts_path, piece)
        if marker is not None:
            log.info("%s of %s is done already", piece, self.label)
            self.publisher.publish(100)
            return self._done(piece, marker)
        plan = self._plan()
        if req.kind == KIND_CHUNK and not 0 <= req.chunk < len(plan):
            raise ValueError(f"chunk {req.chunk} is outside the plan's {len(plan)} chunks")
        source, facts, renditions = self._probe()
        threads = self.limits.ffmpeg_thread_cap()
        frame_rate = command.output_frame_rate(facts.frame_rate_fraction)
        partial = self.store.new_partial(self.staging_key, self.job_id)
        if req.kind == KIND_CHUNK:
            chunk = plan[req.chunk]
            start, seconds, first = chunk.start_seconds, chunk.duration_seconds, chunk.first_segment
            if req.chunk == len(plan) - 1:  # the last chunk runs to the end of the source
                seconds = max(seconds, facts.duration_seconds - start)
            for r in renditions:
                (partial / r.name).mkdir()
            encode_plan = command.EncodePlan(
                source=source, out_dir=partial, renditions=renditions, segment_seconds=req.segment_seconds,
                frame_rate=frame_rate, has_audio=False, preset=self.preset or command.x264_preset(), threads=threads,
            )
            argv = chunk_command.build_chunk_command(encode_plan, start, chunk.duration_seconds, first,
                                                     last=req.chunk == len(plan) - 1)
            output_budget = admission.output_budget_bytes(seconds, renditions, False, self.limits)
            dirs = [(r.name, r.width, r.height) for r in renditions]
        else:
            if not facts.has_audio:
                raise InvalidMediaError(f"{self.label} has no audio stream to encode")
            start, seconds, first = 0.0, facts.duration_seconds, 0
            (partial / chunk_command.AUDIO_DIR).mkdir()
            argv = chunk_command.build_audio_command(source, partial / chunk_command.AUDIO_DIR, req.segment_seconds,
                                                     threads)
            output_budget = admission.output_budget_bytes(seconds, [], True, self.limits)
            if output_budget is not None:  # no rungs: the audio's own rate, times the same factor
                output_budget += int(max(0.0, self.limits.output_bitrate_factor) * ladder.AUDIO_KBPS * 125 * seconds)
            dirs = [(chunk_command.AUDIO_DIR, 0, 0)]
        self.stats.update(rungs=len(renditions) if req.kind == KIND_CHUNK else 0, media_seconds=seconds)
        child_limits = ChildLimits(
            memory_bytes=self.limits.ffmpeg_memory_bytes or None,
            cpu_seconds=admission.cpu_budget_seconds(seconds, self.limits),
            file_size_bytes=output_budget,
        )
        self._encode(argv, partial, seconds, output_budget, child_limits)

        made = []
        for name, width, height in dirs:
            playlist = self._read(partial / name, name)
            want = f"seg_{first:05d}.ts"
            if playlist.segments[0].uri != want:
                raise TransientTranscodeError(
                    f"{piece}/{name} starts with {playlist.segments[0].uri}, not {want}")
            made.append(stitch.PieceRendition(name, width, height, playlist.segments))
        if req.kind == KIND_CHUNK and req.chunk < len(plan) - 1:
            expected = round(plan[req.chunk].duration_seconds / max(1, req.segment_seconds))
            for made_r in made:
                if len(made_r.segments) != expected:
                    raise TransientTranscodeError(
                        f"{piece}/{made_r.name} has {len(made_r.segments)} segments, not {expected}: its numbers would "
                        "collide with the next chunk's")
        new_marker = stitch.PieceMarker(
            piece=piece, kind=req.kind, start_seconds=start,
            duration_seconds=round(sum(s.duration for s in made[0].segments), 6), first_segment=first,
            renditions=made, frame_rate=f"{frame_rate.numerator}/{frame_rate.denominator}",
        )
        prefix = f"{req.parts_path}/{piece}"
        _upload_all(self.blobs, {f"{prefix}/{r.name}/{s.uri}": partial / r.name / s.uri
                                 for r in made for s in r.segments})
        # Last: the marker is what "done" means to the stitch and to a re-enqueued job.
        self.blobs.put_bytes(marker_key(req.parts_path, piece), new_marker.to_json(), MARKER_CONTENT_TYPE)
        self.publisher.publish(100)
        return self._done(piece, new_marker)

    def _read(self, directory: Path, name: str) -> master_playlist.MediaPlaylist:
        path = directory / command.MEDIA_PLAYLIST
        if not path.is_file():
            raise TransientTranscodeError(f"ffmpeg exited without writing {name}/{command.MEDIA_PLAYLIST}")
        playlist = master_playlist.read_media_playlist(path)
        if not playlist.segments:
            raise InvalidMediaError(f"{self.label} has no decodable {'audio' if name == 'audio' else 'video'} "
                                    f"in {self.req.kind} {self.req.chunk if self.req.kind == KIND_CHUNK else ''}")
        return playlist

    def _encode(self, argv: list[str], partial: Path, seconds: float, output_budget: int | None,
                child_limits: ChildLimits) -> None:
        """Run FFmpeg with the single job's limits, progress and failure rules."""
        budget = self.timeout_seconds if self.timeout_seconds is not None else encoding.job_timeout_for(seconds)
        guard = OutputGuard(partial, output_budget, self.label, seconds)
        parser = ProgressParser(seconds)
        self.publisher.publish(0)

        def on_line(line: str) -> None:
            guard.check()
            percent = parser.feed(line, self.clock())
            if percent is not None:
                self.publisher.publish(min(percent, 99))

        started = time.monotonic()
        with encoding.sigterm_raises():
            outcome = run_streaming(argv, on_line, timeout_seconds=budget, limits=child_limits)
        self.stats.update(encode_seconds=time.monotonic() - started, peak_memory_bytes=outcome.peak_memory_bytes)
        if outcome.timed_out:
            raise TranscodeTimeoutError(
                f"{self.req.kind} exceeded its {budget:.0f}s budget for {seconds:.1f}s of media; "
                f"last output:\n{encoding.trim(outcome.stderr_tail)}"
            )
        if outcome.returncode != 0 or outcome.out_of_memory:
            raise encoding.classify_failure(outcome, self.label, child_limits)
        guard.check(force=True)

    # -- the stitch ---------------------------------------------------------------------------------

    def stitch(self) -> TranscodeResult:
        req = self.req
        started = self.clock()
        self.publisher.publish(0)
        plan = self._plan()
        source, facts, renditions = self._probe()
        pieces = chunking.pieces(len(plan), facts.has_audio)
        markers: dict[str, stitch.PieceMarker] = {}
        for piece in pieces:
            marker = read_marker(self.blobs, req.parts_path, piece)
            if marker is None:
                raise TransientTranscodeError(f"{piece} of {self.label} is not done yet")
            markers[piece] = marker
        chunk_names = [c.name for c in plan]
        budget = (self.timeout_seconds if self.timeout_seconds is not None
                  else encoding.job_timeout_for(facts.duration_seconds))
        self.stats.update(rungs=len(renditions), media_seconds=facts.duration_seconds)

        partial = self.store.new_partial(req.output_path, self.job_id)
        dirs = [r.name for r in renditions] + ([chunk_command.AUDIO_DIR] if facts.has_audio else [])
        for name in dirs:
            owners = [chunking.AUDIO] if name == chunk_command.AUDIO_DIR else chunk_names
            try:
                lists = [(owner, markers[owner].rendition(name).segments) for owner in owners]
            except KeyError as exc:  # a chunk made with another ladder (cannot happen for one source)
                raise TransientTranscodeError(f"the pieces of {self.label} disagree: {exc}") from None
            try:
                segments = stitch.concatenate([segs for _owner, segs in lists])
            except ValueError as exc:
                raise TransientTranscodeError(f"the pieces of {self.label} overlap: {exc}") from None
            (partial / name).mkdir()
            for owner, segs in lists:
                for seg in segs:
                    _bring(self.blobs, f"{req.parts_path}/{owner}/{name}/{seg.uri}", partial / name / seg.uri)
            (partial / name / command.MEDIA_PLAYLIST).write_text(stitch.render_media_playlist(segments))

        measured = [encoding.measure(partial, r, facts.has_audio, self.label) for r in renditions]
        admission.check_complete(measured[0].playlist.duration, facts.duration_seconds, self.label)
        audio_peak = audio_average = 0
        if facts.has_audio:
            audio = master_playlist.read_media_playlist(partial / chunk_command.AUDIO_DIR / command.MEDIA_PLAYLIST)
            audio_peak = master_playlist.peak_bandwidth(audio.segments, audio.target_duration)
            audio_average = master_playlist.average_bandwidth(audio.segments)
        output_budget = admission.output_budget_bytes(facts.duration_seconds, renditions, facts.has_audio, self.limits)
        child_limits = ChildLimits(
            memory_bytes=self.limits.ffmpeg_memory_bytes or None,
            cpu_seconds=admission.cpu_budget_seconds(facts.duration_seconds, self.limits),
            file_size_bytes=output_budget,
        )
        encoding.make_poster(source, partial / command.POSTER, renditions[0], facts.duration_seconds, child_limits,
                     self.label, self.limits.ffmpeg_thread_cap())
        if self.clock() - started > budget:
            raise TranscodeTimeoutError(f"stitch exceeded its {budget:.0f}s budget")

        frame_rate = float(command.output_frame_rate(facts.frame_rate_fraction))
        variants = encoding.variants(measured, frame_rate, audio_peak, audio_average)
        audio_group = (master_playlist.AudioRendition(f"{chunk_command.AUDIO_DIR}/{command.MEDIA_PLAYLIST}")
                       if facts.has_audio else None)
        master_playlist.write_atomically(partial / storage_layout.MASTER_PLAYLIST,
                                         master_playlist.render_master(variants, audio_group))
        self.store.publish(partial, req.output_path)  # the parts stay for the operator (module docstring)
        self.publisher.publish(100)
        return encoding.completed_result(req, facts.facts(), measured, variants)
