"""Enrollment and identification: the engine, the gallery and the live matcher together.

Why here and not in the CLI: the CLI, the admin API and the daemon must enroll and identify the
same way (same quality gates, same duplicate refusal, same decision rule), so they all call this.
The matcher is kept live from the store: local writes arrive through the store's listener at
once, and writes from other processes (the CLI while the daemon runs) through ``refresh()``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.config import Config
from edge.engine import FaceEngine, Source
from edge.errors import EdgeError, ImageError
from edge.gallery.errors import ConsentError
from edge.gallery.records import ACTIVE, NewTemplate
from edge.gallery.store import GalleryStore
from edge.matching import Matcher
from edge.matching.errors import TemplateIdError
from edge.progress import Progress, report
from edge.quality import reasons

log = logging.getLogger(__name__)

MODEL_VERSION = "1"


class DuplicatePersonError(EdgeError):
    """The face being enrolled already matches another person in the gallery."""

    def __init__(self, message: str, other_person_id: str | None = None) -> None:
        super().__init__(message)
        self.other_person_id = other_person_id


@dataclass(frozen=True)
class Refusal:
    """Why a photo cannot be enrolled, with the face's quality numbers when it had a face."""

    reason: str
    quality: dict[str, float] | None = None


def _rounded(quality: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in quality.items()}



class LiveMatcher:
    """A ``Matcher`` that follows the gallery store, in this process and across processes."""

    def __init__(self, store: GalleryStore, model_id: str, config: Config,
                 long_lived: bool = True) -> None:
        """``long_lived=False`` for a one-shot command: no packed copy of a big gallery is
        built in the background (``Matcher(packed=...)``), since the process ends first."""
        self.store = store
        self.model_id = model_id
        self.matcher = Matcher(config=config.matching, threads=config.inference.threads,
                               packed=long_lived)
        self._refresh_lock = threading.Lock()
        self._seq = store.attach(model_id, self._load, self._apply)

    def _load(self, matrix: Any) -> None:
        self.matcher.load(matrix.template_ids, matrix.person_ids, matrix.vectors)

    def _apply(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        try:
            if kind == "template_added":
                _, template_id, person_id, vector = event
                self.matcher.add(template_id, person_id, vector)
            elif kind == "person_removed":
                self.matcher.remove_person(event[1])
            elif kind == "templates_removed":
                for template_id in event[2]:
                    self.matcher.remove_template(template_id)
        except TemplateIdError:
            # Replayed history may add what we hold or remove what we never held: both no-ops.
            pass

    def refresh(self) -> int:
        """Apply changes other processes committed since the last call; returns how many."""
        with self._refresh_lock:
            seq, events = self.store.changes_since(self._seq, self.model_id)
            for event in events:
                self._apply(event)
            self._seq = seq
            return len(events)


class Recognizer:
    """Enroll people from photos and identify faces, over one store and one live matcher."""

    def __init__(self, config: Config, store: GalleryStore, engine: FaceEngine,
                 long_lived: bool = True, live: LiveMatcher | None = None) -> None:
        """``live``: the daemon's matcher, so the API's enrollments and the camera pipeline
        search one in-memory gallery (an enrollment is matched on the very next frame)."""
        self.config = config
        self.store = store
        self.engine = engine
        self.live = live or LiveMatcher(store, engine.embedder_id, config, long_lived)

    @property
    def matcher(self) -> Matcher:
        return self.live.matcher

    # -- enrollment ------------------------------------------------------------------------
    def _usable_face(self, source: Source) -> tuple[np.ndarray, dict[str, float]] | Refusal:
        """The one usable face of an enrollment photo, or why it cannot be used."""
        try:
            result = self.engine.analyze_file(source)
        except ImageError as exc:
            return Refusal(str(exc))
        qcfg = self.config.quality
        faces = [f for f in result.faces if f.quality["size"] >= qcfg.min_face_px / 2]
        if not result.faces:
            return Refusal("no face found")
        if len(faces) > 1:
            return Refusal(f"several faces ({len(faces)}); enrollment needs a photo of one "
                           "person")
        face = faces[0] if faces else result.faces[0]
        problems = reasons(face.quality, qcfg)
        if problems:
            return Refusal("; ".join(problems), face.quality)
        return face.embedding, face.quality

    def enroll(self, person_id: str, paths: list[str], *, force: bool = False,
               actor: str = "cli", progress: Progress | None = None) -> dict[str, Any]:
        """Add templates from photo files; each must hold exactly one usable face."""
        return self.enroll_images(person_id, [(p, p) for p in paths], force=force, actor=actor,
                                  progress=progress)

    def enroll_images(self, person_id: str, images: Sequence[tuple[str, Source]], *,
                      force: bool = False, actor: str = "cli",
                      progress: Progress | None = None) -> dict[str, Any]:
        """Add templates from ``(name, path or bytes)`` photos, all in one transaction.

        The answer has one entry per photo in ``results`` (accepted with its quality, or the
        reason it was refused); ``rejected`` repeats the refusals in the CLI's older shape.
        ``progress(done, total)`` is told after each photo.
        """
        # Refuse before any photo is analysed: no such person, or no consent valid now (the
        # store checks the consent again when it writes, in the same transaction).
        person = self.store.get_person(person_id)
        if person.consent != ACTIVE:
            raise ConsentError.no_valid_consent(person_id, person.consent)
        self.live.refresh()
        results: list[dict[str, Any]] = []
        warnings: list[str] = []
        accepted: list[tuple[int, np.ndarray, dict[str, float]]] = []
        report(progress, 0, len(images))
        for name, source in images:
            got = self._usable_face(source)
            entry: dict[str, Any] = {"path": name, "accepted": False}
            results.append(entry)
            report(progress, len(results), len(images))
            if isinstance(got, Refusal):
                entry["reason"] = got.reason
                if got.quality is not None:
                    entry["quality"] = _rounded(got.quality)
                continue
            vector, quality = got
            entry["quality"] = _rounded(quality)
            if accepted and float(vector @ accepted[0][1]) < self.config.matching.threshold:
                entry["reason"] = "a different person from the first accepted photo"
                continue
            other = self._other_person_match(person_id, vector)
            if other is not None:
                msg = (f"{name}: this face already matches person {other[0]} "
                       f"(similarity {other[1]:.3f}); one human must not have two ids")
                if not force:
                    raise DuplicatePersonError(msg + " (use --force to enroll anyway)",
                                               other_person_id=other[0])
                warnings.append(msg)
            accepted.append((len(results) - 1, vector, quality))
        added = 0
        if accepted:
            items = [NewTemplate(vector=v, quality=q,
                                 source=os.path.basename(str(results[i]["path"])))
                     for i, v, q in accepted]
            batch = self.store.add_templates(person_id, self.engine.embedder_id, MODEL_VERSION,
                                             items, actor=actor)
            added = len(batch.added)
            kept = set(batch.added)
            for (i, _, _), template_id in zip(accepted, batch.created, strict=True):
                results[i]["accepted"] = template_id in kept
                results[i]["template_id"] = template_id
                if template_id not in kept:
                    results[i]["reason"] = ("scored below the person's "
                                            f"{self.config.enrollment.max_templates} best "
                                            "templates; not kept")
        if warnings:
            log.warning("duplicate enrollment forced",
                        extra={"person_id": person_id, "count": len(warnings)})
        out: dict[str, Any] = {
            "person_id": person_id, "templates_added": added,
            "rejected": [{"path": r["path"], "reason": r["reason"]}
                         for r in results if not r["accepted"]],
            "results": results,
        }
        if warnings:
            out["warnings"] = warnings
        return out

    def _other_person_match(self, person_id: str, vector: np.ndarray) -> tuple[str, float] | None:
        threshold = self.config.enrollment.duplicate_threshold
        for candidate in self.matcher.top_k(vector[None, :], 2)[0]:
            if candidate.person_id != person_id and candidate.similarity >= threshold:
                return candidate.person_id, float(candidate.similarity)
        return None

    # -- identification --------------------------------------------------------------------
    def identify_faces(self, faces: list[Any]) -> list[Any]:
        """Matcher results for faces that carry embeddings (one matrix product for all)."""
        if not faces:
            return []
        return self.matcher.search(np.stack([f.embedding for f in faces]))

    def identify(self, path: str) -> dict[str, Any]:
        return {"path": path, **self.identify_image(path)}

    def identify_image(self, source: Source) -> dict[str, Any]:
        """``{"faces": [...]}`` for a photo (path or bytes), largest face first."""
        self.live.refresh()
        result = self.engine.analyze_file(source)
        faces_out = []
        include_label = self.config.events.include_label
        labels: dict[str, str | None] = {}
        for face, match in zip(result.faces, self.identify_faces(result.faces), strict=True):
            person_id = match.matched_person_id
            entry: dict[str, Any] = {
                "box": [round(float(v), 2) for v in face.box],
                "person_id": person_id,
                "similarity": None if match.similarity is None else round(match.similarity, 6),
                "decision": match.decision,
            }
            if include_label:
                if person_id is not None and person_id not in labels:
                    labels[person_id] = self.store.get_person(person_id).label
                entry["label"] = labels.get(person_id) if person_id else None
            faces_out.append(entry)
            face.embedding = None  # nothing about a face outlives the answer
        return {"faces": faces_out}


def open_recognizer(config: Config) -> Recognizer:
    """The recognizer of a one-shot CLI command."""
    return Recognizer(config, GalleryStore.from_config(config), FaceEngine(config),
                      long_lived=False)


